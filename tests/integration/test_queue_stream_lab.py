"""Streaming `postqueue -j` from the real lab Postfix: LocalTarget.stream gives what run()
gives, read_queue over the stream gives the messages run() gives, and a failing postqueue
still ends in one clear line. Greylisted mail (451 on every attempt) keeps a few messages
deferred while we read."""

from __future__ import annotations

import json

import pytest

from checks.errors import InputError
from checks.postfix.postqueue import parse_postqueue_json
from checks.queue import read_queue
from checks.targets import LocalTarget
from diagnose.cli import main
from tests.lab.postfix import PostfixLab

pytestmark = pytest.mark.lab
N = 3


@pytest.fixture(scope="module")
def deferred(postfix_lab: PostfixLab) -> list[str]:
    return postfix_lab.deferred_mail(N, "stream")


def test_streamed_postqueue_lines_are_run_s_lines(postfix_lab: PostfixLab, deferred: list[str]) -> None:
    argv = ["postqueue", "-c", str(postfix_lab.config_dir), "-j"]
    target = LocalTarget()
    with target.stream(argv) as out:
        streamed = list(out)
        res = out.result()
    ran = target.run(argv)
    assert res.returncode == ran.returncode == 0
    assert sorted(streamed) == sorted(ran.stdout.splitlines())  # the queue scan order may differ
    ids = {json.loads(line)["queue_id"] for line in streamed}
    assert set(deferred) <= ids


def test_read_queue_over_the_stream_equals_parsing_run_output(postfix_lab: PostfixLab, deferred: list[str]) -> None:
    target = LocalTarget()
    seen = []
    read = read_queue(target, str(postfix_lab.config_dir), on_message=seen.append)
    ran = target.run(["postqueue", "-c", str(postfix_lab.config_dir), "-j"])
    parsed = {m.queue_id: m for m in parse_postqueue_json(ran.stdout)}
    assert read.source == "postqueue -j" and not read.stats.malformed
    assert {m.queue_id: m for m in read.messages} == parsed  # same records, recipients and reasons
    assert seen == read.messages  # on_message saw each one, in listing order
    for qid in deferred:
        assert parsed[qid].queue_name == "deferred" and parsed[qid].recipients[0].delay_reason


def test_a_failing_streamed_postqueue_is_one_clear_line(tmp_path, capsys) -> None:
    (tmp_path / "cfg").mkdir()  # no main.cf: postqueue exits 69 with "fatal: open .../main.cf"
    with pytest.raises(InputError, match=r"failed \(exit 69\): postqueue: fatal: open .*main\.cf"):
        read_queue(LocalTarget(), str(tmp_path / "cfg"))
    assert main(["queue", "-c", str(tmp_path / "cfg"), "--format", "json"]) == 1
    err = capsys.readouterr().err
    assert "main.cf" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_pfdiag_queue_json_streamed_agrees_with_postqueue(postfix_lab: PostfixLab, deferred: list[str], capsys) -> None:
    assert main(["queue", "-c", str(postfix_lab.config_dir), "--format", "json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    ran = LocalTarget().run(["postqueue", "-c", str(postfix_lab.config_dir), "-j"])
    listed = {m.queue_id: m for m in parse_postqueue_json(ran.stdout)}
    assert {m["queue_id"] for m in rep["messages"]} == set(listed)
    assert rep["total_recipients"] == sum(len(m.recipients) for m in listed.values())
    mine = [m for m in rep["messages"] if m["queue_id"] in deferred]
    assert len(mine) == N
    for m in mine:
        assert m["recipients"][0]["cause_id"] == "E21"  # greylisting, classified once per reason text
        assert m["forecast"]["mtime_source"] == "file"  # settings arrived and the queue file was stat'ed
    arrivals = [m["arrival_time"] for m in rep["messages"]]
    assert arrivals == sorted(arrivals)
