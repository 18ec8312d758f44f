"""A snapshot bundle never carries a password written into the configuration, redacted or not:
a real postconf -c over a main.cf with smtp_sasl_password_maps = static:user:password (the
Postfix is never started; the commands that need it fail and are listed as not recorded)."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest

from diagnose.cli import main


@pytest.mark.parametrize("redact", [False, True])
def test_no_password_in_a_bundle(redact: bool, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    conf = tmp_path / "postfix"
    conf.mkdir()
    (conf / "main.cf").write_text("compatibility_level = 3.6\nrelayhost = [smtp.example.net]:587\n"
                                  "smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = static:bob:hunter2\n")  # fmt: skip
    (conf / "master.cf").write_text("smtp unix - - n - - smtp\n")
    bundle = tmp_path / "b.tar.gz"
    assert main(["snapshot", "-c", str(conf), "-o", str(bundle), *(["--redact"] if redact else [])]) == 0
    capsys.readouterr()
    with tarfile.open(bundle) as tar:
        blobs = [tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()]  # type: ignore[union-attr]
    assert not [b for b in blobs if b"hunter2" in b]
    # the setting itself stays readable: the map type and that a secret was there
    assert any(b"smtp_sasl_password_maps = static:secret-" in b for b in blobs)
