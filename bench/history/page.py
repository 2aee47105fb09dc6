"""The history's HTML page (reports/history.html.j2): self-contained and offline like the
run report, through the same renderer (bench.report.html: inlined assets, one JSON data
blob), and the link from the newest run's report to it.

The link is a file in the newest run's directory, RUN_DIR/history.json, holding the
page's path relative to RUN_DIR: `isobench report RUN_DIR` (whose default output is
RUN_DIR/report.html) reads it and links to the history.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from bench.report import html

LINK = html.HISTORY_LINK


def render(h: dict[str, Any]) -> str:
    title = f"isobench history · {h['runs'][0]['run_id']} → {h['runs'][-1]['run_id']}"
    return html.render_template("history.html.j2", h, title=title)


def write(path: Path, page: str, h: dict[str, Any]) -> Path:
    """Write the page; record it for the newest run's report."""
    out = html.write(path, page)
    newest = Path(h["runs"][-1]["path"])
    rel = os.path.relpath(out.resolve(), newest.resolve())
    (newest / LINK).write_text(json.dumps({"html": rel}) + "\n")
    return out
