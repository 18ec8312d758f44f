"""`pfdiag queue`'s text listing gives held and active mail its fate too (diagnose/fate.py's
phrase), not only deferred mail; the notes stay last. From a pasted mailq listing (mailq
marks held mail with ! and active mail with *)."""

from __future__ import annotations

from diagnose.cli import main

LISTING = """\
-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------
4F2A21A2298!    1234 Sun Dec  6 10:00:01  bob@example.com
          (host mx.example.net[192.0.2.1] said: 421 4.7.0 rate limited (in reply to MAIL FROM command))
                                         ann@example.net

5B3C11A2299*    2345 Sun Dec  6 11:00:01  carol@example.com
                                         dave@example.org

6C4D11A229A     3456 Sun Dec  6 09:00:01  erin@example.com
          (connect to mx.example.org[192.0.2.2]:25: Connection refused)
                                         frank@example.org

-- 7 Kbytes in 3 Requests.
"""


def _listing(tmp_path, capsys) -> list[str]:
    path = tmp_path / "mailq.txt"
    path.write_text(LISTING)
    assert main(["queue", "--mailq", str(path), "--now", "2026-12-06T12:00"]) == 0
    return capsys.readouterr().out.splitlines()


def test_held_and_active_mail_have_their_fate_in_the_text(tmp_path, capsys):
    out = _listing(tmp_path, capsys)
    start = out.index("Held and active messages: what happens to them")
    rows = {line.split()[0]: line for line in out[start + 2:] if line.startswith("  ") and line.split()[0][:1].isalnum()}
    held, active = rows["4F2A21A2298"], rows["5B3C11A2299"]
    assert " hold " in held and "on hold: nothing happens until it is released (pfdiag queue release --id 4F2A21A2298)" in held
    assert "(last deferred: E22)" in held  # why it was held: its recipients' last cause
    assert " active " in active and "in the active queue: being delivered now" in active
    assert "6C4D11A229A" not in rows  # deferred mail keeps its own table (next attempt, expiry)
    assert any(line.startswith("  6C4D11A229A") and "bounces on" in line for line in out[:start])


def test_the_notes_stay_at_the_end(tmp_path, capsys):
    out = _listing(tmp_path, capsys)
    start = out.index("Held and active messages: what happens to them")
    notes = [i for i, line in enumerate(out) if line.startswith("note: ")]
    assert notes and min(notes) > start


def test_a_queue_of_deferred_mail_only_has_no_such_section(tmp_path, capsys):
    path = tmp_path / "mailq.txt"
    path.write_text("\n".join(LISTING.splitlines()[:1] + LISTING.splitlines()[8:]) + "\n")
    assert main(["queue", "--mailq", str(path), "--now", "2026-12-06T12:00"]) == 0
    out = capsys.readouterr().out
    assert "6C4D11A229A" in out and "Held and active messages" not in out
