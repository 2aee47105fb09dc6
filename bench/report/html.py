"""HTML rendering: Jinja2 (autoescape on) + inlined assets + one JSON data blob.

The file works offline: the chart library, our script and stylesheet are inlined, and
the data is one `<script type="application/json">` element that the script reads. Inside
that element `<`, `>` and `&` are written as JSON escapes (\\u003c ...), so no string from
the data can close the element or open a comment, whatever it contains.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from bench.manifest import Manifest
from bench.report import fmt, model
from bench.resources import reports_dir
from bench.store import json_safe

ASSETS = ("echarts.min.js", "report.js", "report.css")
_CLOSE_SCRIPT = re.compile(r"</(script)", re.IGNORECASE)
_CLOSE_STYLE = re.compile(r"</(style)", re.IGNORECASE)


def data_json(obj: Any) -> str:
    """JSON safe to place inside a <script> element (no `</`, no `<!--`)."""
    if isinstance(obj, dict) and "samples" in obj:  # already JSON-safe, and large
        obj = json_safe({k: v for k, v in obj.items() if k != "samples"}) | {
            "samples": obj["samples"]
        }
    else:
        obj = json_safe(obj)
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


@functools.cache
def asset(name: str) -> str:
    """An asset's text, made safe to inline in a <script> or <style> element."""
    text = (reports_dir() / "assets" / name).read_text(encoding="utf-8")
    if name.endswith(".js"):
        return _CLOSE_SCRIPT.sub(r"<\\/\1", text)
    return _CLOSE_STYLE.sub(r"<\\/\1", text)


@functools.cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(reports_dir())),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        num=fmt.fmt_num,
        qty=lambda x, unit: fmt.fmt_quantity(x, unit),
        ratio=fmt.fmt_ratio,
        pct=lambda x: "–" if x is None else f"{x:+.1f} %",
        pval=lambda p: "–" if p is None else ("< 0.001" if p < 0.001 else f"{p:.3f}"),
        ci=lambda r: fmt.fmt_ci(r["median"], r["ci_low"], r["ci_high"], r["unit"]),
    )
    env.globals["asset"] = lambda name: Markup(asset(name))
    return env


def render_template(template: str, data: dict[str, Any], **context: Any) -> str:
    blob = Markup(data_json(data))
    return environment().get_template(template).render(d=data, data_blob=blob, **context)


def render(
    manifest: Manifest | dict[str, Any],
    df,
    *,
    n_boot: int = 2000,
    canary_series: list[dict[str, Any]] | None = None,
    history: str | None = None,
) -> str:
    """The run's report as one HTML string; `canary_series` is the run's canary.jsonl
    (bench.report.canary.read), for the plot of the host's speed through the run;
    `history` the address of a history page (`isobench history -o`) to link to."""
    data = model.build(manifest, df, n_boot=n_boot, canary_series=canary_series)
    title = f"isobench · {data['run']['run_id']}"
    return render_template("report.html.j2", data, title=title, history=history)


def render_run(run_dir: Path, *, n_boot: int = 2000) -> str:
    """The report of the run in `run_dir`: its manifest, samples and canary."""
    from bench import store
    from bench.report import canary

    return render(
        store.read_manifest(run_dir),
        store.load_samples(run_dir),
        n_boot=n_boot,
        canary_series=canary.read(run_dir),
        history=history_link(run_dir),
    )


HISTORY_LINK = "history.json"  # written by `isobench history -o` (bench/history/page.py)


def history_link(run_dir: Path) -> str | None:
    """The history page recorded for this run, relative to RUN_DIR (where the report
    goes by default), if `isobench history -o` recorded one."""
    try:
        return str(json.loads((Path(run_dir) / HISTORY_LINK).read_text())["html"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write(path: Path, html: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(path)
    return path
