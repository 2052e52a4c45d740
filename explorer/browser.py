"""Headless Chromium for the explorer: the launch the tests use, and the README's screenshots.

    python -m explorer.browser docs/site      # build the site in a temp folder, screenshot 5 pages

Uses Debian's `chromium` (no browser download: `playwright install` is never needed) through
Playwright for Python; `SFTRL_CHROMIUM` names another Chromium binary.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str | None:
    """The Chromium binary to drive: $SFTRL_CHROMIUM, else Debian's /usr/bin/chromium (or on PATH)."""
    env = os.environ.get("SFTRL_CHROMIUM")
    if env:
        return env if Path(env).exists() else None
    for name in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


def launch(playwright: Any, user_data_dir: str | Path, width: int = 1360, height: int = 900) -> Any:
    """A persistent context in a fresh profile folder (no state from any earlier run)."""
    exe = chromium_path()
    if exe is None:
        raise FileNotFoundError("no Chromium found: install Debian's `chromium` (scripts/setup.sh does) "
                                "or set SFTRL_CHROMIUM to a Chromium binary")
    return playwright.chromium.launch_persistent_context(
        str(user_data_dir), executable_path=exe, headless=True, args=CHROMIUM_ARGS,
        viewport={"width": width, "height": height}, accept_downloads=True)


def node_position(page: Any, method: str) -> tuple[float, float]:
    """Where a graph node is drawn on the page (viewport pixels), to click it like a person."""
    x, y = page.evaluate("(id) => { const p = cy.getElementById(id).renderedPosition();"
                         " const b = document.getElementById('cy').getBoundingClientRect();"
                         " return [b.left + p.x, b.top + p.y]; }", method)
    return x, y


SHOTS = (  # (file, page, what to do before the shot)
    ("studies.png", "index.html#domain=math&paradigm=hybrid", None),
    ("study.png", "studies/{study}.html", None),
    ("method.png", "methods/grpo.html", None),
    ("graph.png", "graph.html", "grpo"),
    ("trends.png", "trends.html", None),
)


def screenshots(dest: Path, study: str = "light-r1") -> list[Path]:
    from playwright.sync_api import sync_playwright

    from explorer.build import build_site

    dest.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        site = Path(tmp) / "site"
        stats = build_site(site)
        ids = {p.stem for p in (site / "studies").glob("*.html")}
        study = study if study in ids else sorted(ids)[0]
        with sync_playwright() as pw:
            ctx = launch(pw, Path(tmp) / "profile")
            page = ctx.new_page()
            for name, rel, node in SHOTS:
                path, _, frag = rel.format(study=study).partition("#")
                page.goto((site / path).as_uri() + (f"#{frag}" if frag else ""))
                page.wait_for_load_state("load")
                if node:  # highlight a method's lineage by clicking it, as a person would
                    page.mouse.click(*node_position(page, node))
                page.wait_for_timeout(300)
                out = dest / name
                page.screenshot(path=str(out), full_page=False)
                written.append(out)
            ctx.close()
    print(f"built in {stats.seconds:.1f} s; wrote {', '.join(str(p) for p in written)}")
    return written


if __name__ == "__main__":
    screenshots(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/site"))
