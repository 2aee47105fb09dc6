"""A Jupyter notebook for one run: loads it with bench.store, reproduces the summary
table with bench.analysis, and draws a few charts (matplotlib if installed, else tables)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

INTRO = """# isobench run `{run_id}`

Loads the run into pandas and reproduces the report's main tables. `df` holds every sample
record (round 0 is the warm-up; `status` says whether a launch failed and why);
`summary` is the table the report is built from (`bench.analysis.summarize_run`)."""

LOAD = """from pathlib import Path

import pandas as pd

from bench import analysis, store

RUN_DIR = Path({run_dir!r})
manifest = store.read_manifest(RUN_DIR)
df = store.load_samples(RUN_DIR)
print(manifest["run_id"], manifest.get("status"), len(df), "records")
df.head()"""

SUMMARY = """summary = pd.DataFrame(analysis.summarize_run(df, manifest))
cols = ["env", "workload", "op", "metric", "unit", "n", "median", "ci_low", "ci_high",
        "ratio", "ratio_ci_low", "ratio_ci_high", "p_adjusted", "significant"]
summary[cols]"""

RATIOS = """# ratio of medians to the baseline, environment x (workload, op, metric)
baseline = manifest["matrix"].get("baseline", "host")
(summary[summary["env"] != baseline]
 .pivot_table(index=["workload", "op", "metric"], columns="env", values="ratio")
 .round(3))"""

FOOTPRINT = """footprint = pd.DataFrame(
    analysis.summarize_run(df, manifest, scope=analysis.FOOTPRINT))
if len(footprint):
    display(footprint.pivot_table(index=["op", "metric", "workload"], columns="env",
                                  values="median").round(2))
pd.DataFrame(analysis.failures(df))"""

CHARTS = """measured = analysis.measured(df)
try:
    import matplotlib.pyplot as plt
except ImportError:
    plt = None
    print("matplotlib is not installed: distributions as tables instead of charts")
groups = list(measured.groupby(["workload", "op", "metric"]))
if plt is None:
    display(measured.groupby(["workload", "op", "metric", "env"])["value"]
            .describe()[["count", "min", "25%", "50%", "75%", "max"]])
else:
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 2.6 * len(groups)), squeeze=False)
    for ax, ((w, o, m), g) in zip(axes[:, 0], groups):
        envs = list(dict.fromkeys(g["env"]))
        ax.boxplot([g[g["env"] == e]["value"] for e in envs], labels=envs)
        ax.set_title(f"{w} · {o} · {m}")
        ax.set_ylabel(g["unit"].iloc[0])
    fig.tight_layout()"""


def build(run_dir: Path, manifest: dict[str, Any]):
    import nbformat
    from nbformat import v4

    fill = {"run_dir": str(Path(run_dir).resolve()), "run_id": manifest.get("run_id", "?")}
    nb = v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    nb.cells = [
        v4.new_markdown_cell(INTRO.format(**fill)),
        v4.new_code_cell(LOAD.format(**fill)),
        v4.new_markdown_cell("## Summary: medians, CIs, ratios to the baseline, significance"),
        v4.new_code_cell(SUMMARY),
        v4.new_code_cell(RATIOS),
        v4.new_markdown_cell("## Host-side footprint and failures"),
        v4.new_code_cell(FOOTPRINT),
        v4.new_markdown_cell("## Distributions per workload op"),
        v4.new_code_cell(CHARTS),
    ]
    nbformat.validate(nb)
    return nb


def text(run_dir: Path, manifest: dict[str, Any]) -> str:
    import nbformat

    return nbformat.writes(build(run_dir, manifest))


def write(run_dir: Path, manifest: dict[str, Any], out: Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text(run_dir, manifest), encoding="utf-8")
    return out
