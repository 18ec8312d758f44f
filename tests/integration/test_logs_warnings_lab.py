"""`pfdiag logs` on the real lab Postfix (issue 14): Postfix's own warning lines appear under the
cause they explain, literally and counted. Two real misconfigurations:

- a domain routed to port 465 without smtp_tls_wrappermode: smtp logs "SMTPS wrappermode (TCP port
  465) requires setting ..." and the attempt times out waiting for a greeting (E04); the peer on
  127.0.0.1:465 is NoBannerPeer (a TLS-wrapped server says nothing first, either);
- a domain routed to a transport master.cf does not have: qmgr logs "warning: connect to transport
  private/nosuch: No such file or directory" and defers "mail transport unavailable" (E31)."""

from __future__ import annotations

import re
from typing import Any, Iterator

import pytest

from diagnose.cli import main
from tests.lab.peers import NoBannerPeer
from tests.lab.postfix import PostfixLab
from tests.lab.scenarios import SENDER

pytestmark = pytest.mark.lab
WRAP, NOSUCH = "smtps465.test", "notransport.test"


@pytest.fixture(scope="module")
def window(postfix_lab: PostfixLab) -> Iterator[dict[str, Any]]:
    lab = postfix_lab
    try:
        peer = NoBannerPeer("smtps", port=465, hostname=f"mx.{WRAP}").start()
    except OSError as exc:
        pytest.skip(f"127.0.0.1:465 is taken here ({exc})")
    try:
        lab.route(WRAP, 465)
        lab.route(NOSUCH, nexthop="nosuch:[127.0.0.1]")
        lab.apply()
        since = lab.fresh_window([(SENDER, [f"a@{WRAP}"], {"subject": "wrap a"}), (SENDER, [f"b@{WRAP}"], {"subject": "wrap b"}),
                                  (SENDER, [f"c@{NOSUCH}"], {"subject": "nosuch"})], timeout=90)  # fmt: skip
        yield {"since": since}
    finally:
        lab.clear_queue()
        lab.routes.pop(WRAP, None)
        lab.routes.pop(NOSUCH, None)
        lab.apply()
        peer.stop()


def _section(text: str, head: str) -> str:
    """The per-cause block: its heading line says the deferral count."""
    start = next(m.start() for m in re.finditer(rf"(?m)^{re.escape(head)}.* deferral\(s\)", text))
    end = text.find("\n\n", start)
    return text[start: end if end > 0 else len(text)]


def test_warnings_appear_under_their_cause(postfix_lab, window, capsys):
    lab = postfix_lab
    assert main(["logs", str(lab.log_path), "--since", window["since"]]) == 0
    text = capsys.readouterr().out
    e04 = _section(text, "E04 ")
    assert re.search(r"postfix: \S.* postfix/smtp\[\d+\]: SMTPS wrappermode \(TCP port 465\) requires setting "
                     r"\"smtp_tls_wrappermode = yes\".*\((\d+)x\)", e04), e04  # fmt: skip
    e31 = _section(text, "E31 ")
    assert re.search(r"postfix: .* postfix/qmgr\[\d+\]: warning: connect to transport private/nosuch: No such file or "
                     r"directory  \(\d+x\)", e31), e31  # fmt: skip
    assert "SMTPS wrappermode" not in e31 and "connect to transport" not in e04
    assert main(["logs", str(lab.log_path), "--since", window["since"], "-f", "md"]) == 0
    md = capsys.readouterr().out
    assert "Postfix said (count):" in md.split("### E04")[1].split("###")[0]
    assert "warning: connect to transport private/nosuch" in md.split("### E31")[1].split("###")[0]
