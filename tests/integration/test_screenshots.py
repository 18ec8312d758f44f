"""The demo report's HTML page in a real browser: tools/screenshots.py renders it and takes headless
Chromium screenshots at a desktop width (1280 px) and a phone width (390 px). The pictures must exist,
be PNGs of those widths, and hold a real page (a blank or failed render compresses to a few KB)."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab
ROOT = Path(__file__).resolve().parents[2]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()[:24]
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path.name} is not a PNG"
    return struct.unpack(">II", data[16:24])


def test_demo_screenshots(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, str(ROOT / "tools" / "screenshots.py"), str(tmp_path)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)  # fmt: skip
    assert res.returncode == 0, res.stderr
    page = (tmp_path / "demo-report.html").read_text()
    assert "Do this now" in page and "Deferrals by hour" in page
    for width in (1280, 390):
        png = tmp_path / f"demo-{width}.png"
        assert png.exists(), res.stdout
        w, h = png_size(png)
        assert w == width and h > 500
        assert png.stat().st_size > 30_000, f"{png.name}: {png.stat().st_size} bytes, an empty page?"
