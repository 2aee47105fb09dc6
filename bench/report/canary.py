"""The host canary of a run, as the report and the summary read it: its series from
RUN_DIR/canary.jsonl and its diagnosis from the manifest (noise.canary), put in words.

The runner records the canary (the host's own pair of 5 ms bursts, a `null` burst of
getppid and a `compute` burst, between blocks through the run) one JSON object a line:
{"t": s since measuring started, "round": int, "null_ns": ns per getppid, "compute_ops":
ops/s}, and its diagnosis (bench.canary_diagnosis.diagnose() of that series, plus
"every_ms", the median time between a burst and its paired partner in a block, and
"blocks") under manifest["noise"]["canary"]. A run recorded before the canary has
neither: then there is nothing to say, and no error.

The pairing clause says what the interleaving bought: a ratio's two bursts share the
machine's state when they are made well within one phase of its speed, i.e. at most
PAIRED_WITHIN of the phase length apart (a 40 ms pairing against 2 s phases: one pair in
50 straddles a phase change, and the block medians set those aside)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

CANARY_FILE = "canary.jsonl"
FIELDS = ("t", "round", "null_ns", "compute_ops")
PAIRED_WITHIN = 0.1  # pairing "within the same phase": at most a tenth of a phase apart
# canary_diagnosis.sentence() ends a phased verdict with this general claim; where the run
# knows how far apart its pairs were, the specific clause replaces it
GENERAL_CLAIM = "; interleaved bursts pair measurements made within the same phase"
# ... and what the phases do to a figure's own median: on this noisy VM the share of time
# in the slow state drifted over a minute (a round's host null median 168-227 ns, its
# fastest tenth 164-178, on either CPU alike), so the host's own null read ±13% in a
# main job whose ratios read ±1-3%
OWN = (
    "; a figure's own median moves with the phases, so its interval spans them where a"
    " ratio's need not"
)


def read(run_dir: Path) -> list[dict[str, Any]] | None:
    """The canary's records in time order, None when the run has no canary.jsonl. A line
    that is not a record of the four fields with finite, positive figures (a line cut by
    a kill, say) is left out: the plot shows what was measured."""
    path = Path(run_dir) / CANARY_FILE
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None
    except OSError:
        return None
    out = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
            row = {
                "t": float(rec["t"]),
                "round": int(rec["round"]),
                "null_ns": float(rec["null_ns"]),
                "compute_ops": float(rec["compute_ops"]),
            }
        except (ValueError, TypeError, KeyError):
            continue
        if all(math.isfinite(row[k]) for k in FIELDS) and row["null_ns"] > 0 < row["compute_ops"]:
            out.append(row)
    return sorted(out, key=lambda r: r["t"])


def diagnosis(manifest: dict[str, Any] | Any) -> dict[str, Any] | None:
    """manifest["noise"]["canary"] (a dict or the typed Manifest), None when absent."""
    noise = manifest.get("noise") if isinstance(manifest, dict) else manifest.noise
    found = (noise or {}).get("canary")
    return found if isinstance(found, dict) and found.get("sentence") else None


def diagnose(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The diagnosis of a recorded series (for a run whose manifest lacks it: one stopped
    before it was written); None for a series too short to say anything."""
    from bench.canary_diagnosis import Series
    from bench.canary_diagnosis import diagnose as run

    t, seen = [], set()
    keep = []
    for r in records:  # diagnose() wants strictly increasing times
        if r["t"] not in seen:
            seen.add(r["t"])
            keep.append(r)
            t.append(r["t"])
    try:
        return run(
            Series(
                tuple(t),
                tuple(r["null_ns"] for r in keep),
                tuple(r["compute_ops"] for r in keep),
                burst_ms=5.0,
            )
        )
    except ValueError:
        return None


def phase_s(diag: dict[str, Any]) -> float | None:
    """The typical phase length (s) of the column that moves in phases (getppid first),
    None where neither does."""
    for key in ("null_ns", "compute_ops_per_s"):
        col = diag.get(key) or {}
        if col.get("phases") and col.get("phase_s"):
            return float(col["phase_s"])
    return None


def ms(x: float) -> str:
    return f"{x:.0f}" if x >= 10 else f"{x:.1f}".removesuffix(".0")


def pairing(diag: dict[str, Any]) -> str:
    """What the interleaving bought, as a clause: "" without every_ms."""
    every = diag.get("every_ms")
    if not isinstance(every, int | float) or not math.isfinite(every) or every <= 0:
        return ""
    said = f"bursts were interleaved every {ms(every)} ms"
    phase = phase_s(diag)
    if phase is None:
        return said
    if every <= PAIRED_WITHIN * phase * 1e3:
        return f"{said}, so each ratio pairs measurements made within the same phase{OWN}"
    return (
        f"{said}, not well within its phases of ~{phase:.1f} s: a ratio's two bursts may "
        "fall in different phases"
    )


def line(diag: dict[str, Any]) -> str:
    """The one line the summary prints and the report leads with: the diagnosis'
    sentence, then the pairing clause where the run knows how far apart its pairs were."""
    said, paired = diag["sentence"], pairing(diag)
    if not paired:
        return said
    return said.removesuffix(GENERAL_CLAIM) + "; " + paired
