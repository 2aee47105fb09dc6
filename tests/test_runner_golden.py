"""Golden samples: fake-environment runs on the fake clock (tests/fakes.py), recorded
once and compared byte for byte, so a change to how the runner is built (its families,
its scheduling) is seen to keep what it does: the launch order, each launch's round, `t`
and arguments, the figures, the failures and their reasons, the progress callback's
elapsed and total seconds (the budget estimate), and how the run ended.

ISOBENCH_REGEN_GOLDEN=1 rewrites the files under tests/data/golden/ instead of comparing
(only when a change of behaviour is meant; the diff then says what changed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bench.matrix import QUICK
from tests.fakes import (
    CLOCK,
    REDIS,
    REDIS_SERVER,
    FakeEnv,
    catalog_for_tests,
    make_run,
    patch_fakes,
    stand_ins,
)

GOLDEN = Path(__file__).parent / "data" / "golden"
REGEN = os.environ.get("ISOBENCH_REGEN_GOLDEN") == "1"
FIELDS = ("launch", "round", "cell", "t", "args", "source", "op", "metric", "value")
FIELDS += ("status", "reason")
MANIFEST = ("status", "stop_reason", "rounds_done", "warnings", "unreached")
MANIFEST += ("wall_seconds", "measured_seconds")

SCENARIOS = {
    # probes on two plain environments and a guest (one instance per round, emulated,
    # its own round cap); a noisy one gets extra rounds with the baseline
    "probes": (
        ["fake:label=a,noise=0.001", "fake:label=b,noise=0.3", "batch:label=vm"],
        ("syscall", "cpu"),
        {"rounds": 3, "max_rounds": 6, "precision": 0.02, "emulated_rounds": 2},
    ),
    # the budget ends the run
    "budget": (
        ["fake:label=a", "fake:label=b"],
        ("syscall", "cpu"),
        {"rounds": 20, "max_rounds": 20, "budget": 15},
    ),
    # a quick density run: a held instance as warm-up, its minimum rounds on the budget
    "density": (["fake:label=a", "batch:label=vm"], ("density",), {"quick": True, **QUICK}),
    # the net server beside a probe, the path each round learns recorded
    "net": (
        ["fake:label=a", "batch:label=vm"],
        ("net", "syscall"),
        {"rounds": 3, "max_rounds": 3},
    ),
    # a user command (read by its parser) and a user server (its client on a host)
    "user": (
        ["fake:label=a,rootfs=r", "batch:label=vm,rootfs=r"],
        ("syscall",),
        {"rounds": 3, "max_rounds": 3, "user_workloads": [REDIS, REDIS_SERVER]},
    ),
    # an environment that is not there and one whose engine goes away at every launch
    "failures": (
        ["fake:label=a", "gone:label=g", "broken:label=x"],
        ("syscall", "cpu"),
        {"rounds": 2, "max_rounds": 2},
    ),
}


def sample(name: str, tmp_path: Path, monkeypatch) -> str:
    """The golden text of one scenario's run."""
    patch_fakes(monkeypatch, wall=True)
    calls = stand_ins(monkeypatch)
    CLOCK.now = 1000.0
    progress: list[list] = []
    envs, workloads, settings = SCENARIOS[name]
    manifest, records, _ = make_run(tmp_path, catalog_for_tests())(
        envs,
        workloads,
        progress=lambda what, done, total: progress.append([what, done, total]),
        **settings,
    )
    doc = {
        "launches": [{k: r.get(k) for k in FIELDS} for r in records],
        "calls": [list(c) for c in FakeEnv.calls] + [list(c) for c in calls],
        "progress": progress,
        "manifest": {k: manifest.get(k) for k in MANIFEST},
        "net_path": {e: d.get("net_path") for e, d in manifest["environments"].items()},
    }
    return json.dumps(_rounded(doc), indent=1, sort_keys=True) + "\n"


def _rounded(x):
    """Floats to 10 significant digits: the fake figures come from np.exp, whose last
    bit depends on the SIMD path the CPU takes (two machines of this kind wrote
    100.12580929467218 and ...221), which is no change of the runner's behaviour."""
    if isinstance(x, float):
        return float(f"{x:.10g}")
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_rounded(v) for v in x]
    return x


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_fake_run_is_what_it_was(name, tmp_path, monkeypatch):
    text = sample(name, tmp_path, monkeypatch)
    path = GOLDEN / f"{name}.json"
    if REGEN:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"no golden sample {path}: run with ISOBENCH_REGEN_GOLDEN=1"
    assert text == path.read_text(), f"the {name} run differs from {path}"
