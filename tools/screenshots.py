"""Screenshots of the demo report's HTML page in a real browser (headless Chromium), at a desktop
width (1280 px) and a phone width (390 px), to look at what a reader sees first.

    python tools/screenshots.py [OUT_DIR] [--chromium PATH]

writes OUT_DIR/demo-report.html, OUT_DIR/demo-1280.png and OUT_DIR/demo-390.png (default OUT_DIR:
./screenshots) and prints their paths. The page is rendered by pfdiag itself (`pfdiag report --demo
-f html`); Chromium reads it from the file system, with no network (the page loads nothing anyway).
Exit 0 when both pictures were written, 1 otherwise (one line saying why).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SIZES = {"1280": (1280, 1000), "390": (390, 844)}  # width x height of the window, CSS pixels
CHROMIUM_SECONDS = 90  # per picture: a cold start of Chromium on a busy machine takes seconds


def find_chromium(given: str | None) -> str | None:
    for name in ([given] if given else []) + ["chromium", "chromium-browser", "google-chrome", "chrome"]:
        path = shutil.which(name) if name else None
        if path:
            return path
    return None


def render_demo(path: Path) -> None:
    from diagnose import engine, report
    from diagnose.html import render_html
    from diagnose.target_options import demo_path

    from checks.targets import SnapshotTarget

    doc = report.build(engine.gather(SnapshotTarget(demo_path()), {"target": "demo"}, budget=60), {"target": "demo"})
    path.write_text(render_html(doc), encoding="utf-8")


def screenshot(chromium: str, page: Path, png: Path, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory(prefix="pfdiag-chromium-") as profile:
        argv = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                "--disable-extensions", "--disable-background-networking", "--no-proxy-server",
                f"--user-data-dir={profile}", f"--window-size={width},{height}", f"--screenshot={png}",
                page.resolve().as_uri()]  # fmt: skip
        res = subprocess.run(argv, capture_output=True, text=True, timeout=CHROMIUM_SECONDS,
                             env={**os.environ, "HOME": profile})  # fmt: skip
        if not png.exists() or png.stat().st_size == 0:
            raise RuntimeError(f"{chromium} wrote no {png.name} (exit {res.returncode}): {res.stderr.strip()[-300:]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", nargs="?", default="screenshots", help="directory for the page and the pictures")
    p.add_argument("--chromium", help="the browser binary (default: chromium on PATH)")
    args = p.parse_args(argv)
    chromium = find_chromium(args.chromium)
    if chromium is None:
        print("screenshots: no chromium found (tests/lab/install.sh installs it; or give --chromium PATH)", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    page = out / "demo-report.html"
    render_demo(page)
    try:
        for name, (w, h) in SIZES.items():
            png = out / f"demo-{name}.png"
            png.unlink(missing_ok=True)
            screenshot(chromium, page, png, w, h)
            print(png)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        print(f"screenshots: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
