"""The postqueue -j parser builds its frozen dataclasses through the slots' descriptors
(checks/postfix/postqueue.py _recipient/_message): the very objects the dataclass __init__
makes - equal, same hash, same repr, still frozen - for every field."""

from __future__ import annotations

import dataclasses
import pickle

import pytest

from checks.postfix.postqueue import QueuedMessage, QueuedRecipient, _message, _recipient, parse_postqueue_json


def test_fast_recipient_is_the_dataclass():
    for args in [("a@b",), ("a@b", "why"), ("a@b", None, "orig@b", "bounced", "other"), ("", "", None, None, None)]:
        fast, slow = _recipient(*args) if len(args) > 1 else _recipient(args[0], None), QueuedRecipient(*args)
        assert type(fast) is QueuedRecipient
        assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
        assert dataclasses.astuple(fast) == dataclasses.astuple(slow)
        assert pickle.loads(pickle.dumps(fast)) == slow
        with pytest.raises(dataclasses.FrozenInstanceError):
            fast.address = "x"


def test_fast_message_is_the_dataclass():
    rcpts = (QueuedRecipient("a@b", "r"), _recipient("c@d", None))
    for forced in (False, True):
        args = ("ABCDEF123", "deferred", 1796338027.0, 312, "s@x", rcpts, forced)
        fast, slow = _message(*args), QueuedMessage(*args)
        assert type(fast) is QueuedMessage
        assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
        assert [getattr(fast, f.name) for f in dataclasses.fields(QueuedMessage)] == list(args)
        assert dataclasses.replace(fast, size=1) == dataclasses.replace(slow, size=1)
        assert fast.reasons == ("r",) and fast.null_sender is False
        with pytest.raises(dataclasses.FrozenInstanceError):
            fast.size = 1


def test_every_field_has_a_setter_in_order():
    """A field added to either dataclass must be added to the fast constructors too."""
    assert [f.name for f in dataclasses.fields(QueuedRecipient)] == list(QueuedRecipient.__slots__)
    assert [f.name for f in dataclasses.fields(QueuedMessage)] == list(QueuedMessage.__slots__)


def test_parsed_records_equal_hand_built_ones():
    text = ('{"queue_name": "deferred", "queue_id": "00000100000", "arrival_time": 1796338027, "message_size": 312, '
            '"forced_expire": false, "sender": "", "recipients": [{"address": "u@p.test", "delay_reason": "slow"}, '
            '{"address": "v@p.test", "delay_reason": "", "orig_address": "V@p.test", "bounce_reason": "b", '
            '"other_reason": 5}]}\n')  # fmt: skip
    (m,) = list(parse_postqueue_json(text))
    assert m == QueuedMessage("00000100000", "deferred", 1796338027.0, 312, "",
                              (QueuedRecipient("u@p.test", "slow"), QueuedRecipient("v@p.test", None, "V@p.test", "b")),
                              False)  # fmt: skip
