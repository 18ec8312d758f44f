"""The byte-level caps of the SSH target (checks/targets/ssh/channels.py) that need no server:
_LineCap cuts long lines wherever the chunk borders fall, and _split_pid finds the wrapper's
pid line. The same code against real hostile servers: tests/integration/test_ssh_hostile.py."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from checks.targets.ssh.channels import _LineCap, _split_pid


def _through(cap: int, chunks: list[bytes]) -> tuple[bytes, int]:
    lc = _LineCap(cap)
    return b"".join(lc.feed(c) for c in chunks), lc.truncated


def _expected(cap: int, data: bytes) -> tuple[bytes, int]:
    """What a line-by-line reader with a cap hands out: each line cut at cap bytes."""
    lines = data.split(b"\n")
    last = lines.pop()
    cut = sum(len(line) > cap for line in [*lines, last])
    out = b"".join(line[:cap] + b"\n" for line in lines)
    if last:
        out += last[:cap] + (b"\n" if len(last) > cap else b"")
    return out, cut


def _chunked(data: bytes, sizes: list[int]) -> list[bytes]:
    chunks, pos = [], 0
    for size in sizes:
        chunks.append(data[pos : pos + size])
        pos += size
    return [*chunks, data[pos:]]


@given(
    cap=st.integers(1, 40),
    data=st.binary(max_size=400).map(lambda b: b.replace(b"\r", b"")),
    sizes=st.lists(st.integers(0, 90), max_size=12),
)
def test_lines_are_cut_at_the_cap_wherever_chunks_end(cap: int, data: bytes, sizes: list[int]) -> None:
    assert _through(cap, _chunked(data, sizes)) == _expected(cap, data)


def test_short_lines_pass_untouched_and_an_endless_line_is_cut_once() -> None:
    flood = [b"x" * 99 + b"\n"] * 1000
    assert _through(1 << 20, [b"".join(flood)] * 3) == (b"".join(flood) * 3, 0)
    out, cut = _through(4096, [b"y" * 65536] * 50)  # 3.2 MB, no newline
    assert out == b"y" * 4096 + b"\n" and cut == 1
    out, cut = _through(4096, [b"y" * 65536, b"yy\nnext\n"])
    assert out == b"y" * 4096 + b"\nnext\n" and cut == 1


def test_the_wrappers_pid_line_is_found_after_login_noise() -> None:
    assert _split_pid(b"pfdiag-pid 42\nwarning\n") == (42, b"warning\n")
    assert _split_pid(b"motd\npfdiag-pid 7\nrest") == (7, b"motd\nrest")
    assert _split_pid(b"pfdiag-pid 7") == (None, b"pfdiag-pid 7")  # not complete yet
    assert _split_pid(b"nothing here\n") == (None, b"nothing here\n")
