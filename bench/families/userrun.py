"""Reading a user's own workload's output (issue 16), for the strategies that run one (a
pytest-benchmark suite or any command, declared in the matrix ([[user_workload]],
bench/matrix.py UserWorkload) and run from the environment's rootfs through the normal
probe path of every kind: bench/families/user.py, and userserver.py for a server's client).

The bundle's `userrun` probe (workloads/userrun.c) runs the command inside the instance
and hands back its output as base64 chunk lines and an exit line; here that output is
reassembled, kept in the run directory (raw/<workload>/...), read by the workload's
parser (bench/parsers.py) and turned back into probe-like records, one per figure, so
the runner, the statistics, the summary and the report treat them as any probe's.

A pytest-benchmark suite: `python3 -m pytest --benchmark-only --benchmark-json={out}`
in its directory; every benchmark is an op named by its pytest name, with one figure per
pytest-benchmark round (stats.data). The kept JSON gets the environment in its
machine_info (and each benchmark's extra_info), so pytest-benchmark's own tools read it.

A command with a `server` (redis-server...): the server is held in the environment and
`argv` is its client, run on the host from the same rootfs (bench/families/userserver.py); the
client's output is read here as any command's.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import parsers
from bench.envs.base import Launch
from bench.families.base import Settings
from bench.matrix import USER_PROBE as PROBE
from bench.matrix import UserWorkload

PYTEST_NO_TESTS = 5  # pytest's exit status when it collected nothing
SUMMARY_LINE = re.compile(r"^(FAILED|ERROR) (\S+)(?: - (.*))?$")


# ---------------------------------------------------------------- userrun's output


@dataclass
class Output:
    """What userrun handed back: the command's streams and how it ended (status None: no
    exit line, the instance ended before userrun could report)."""

    stdout: str = ""
    file: str | None = None  # the {out} file, when the command wrote one
    stderr: str = ""
    status: int | None = None
    signal: int = 0
    elapsed_ns: int = 0
    truncated: list[str] = field(default_factory=list)


def reassemble(records: list[dict[str, Any]]) -> Output:
    """Pure: userrun's records (chunk lines in order, then the exit line) -> Output."""
    parts: dict[str, list[tuple[int, bytes]]] = {"stdout": [], "file": [], "stderr": []}
    out, has_file = Output(), False
    for r in records:
        if r.get("probe") != PROBE:
            continue
        if r.get("op") == "chunk" and r.get("stream") in parts:
            parts[r["stream"]].append((int(r.get("seq", 0)), base64.b64decode(r.get("b64", ""))))
        elif r.get("op") == "exit":
            out.status = int(r["metrics"]["exit_status"])
            out.signal = int(r.get("signal") or 0)
            out.elapsed_ns = int(r.get("elapsed_ns") or 0)
            out.truncated = list(r.get("truncated") or [])
            has_file = bool(r.get("file"))
    text = {k: b"".join(b for _, b in sorted(v)).decode(errors="replace") for k, v in parts.items()}
    out.stdout, out.stderr = text["stdout"], text["stderr"]
    if out.status is not None and has_file:
        out.file = text["file"]
    return out


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def failed_tests(stdout: str) -> list[tuple[str, str]]:
    """Pure: pytest's short summary lines (FAILED/ERROR name - message) -> (name, why)."""
    out = []
    for line in stdout.splitlines():
        m = SUMMARY_LINE.match(line.strip())
        if m:
            what = (  # ERROR: a collection or fixture error, not always one benchmark
                f"benchmark {m.group(2)} failed"
                if m.group(1) == "FAILED"
                else f"{m.group(2)} errored"
            )
            out.append((m.group(2), what + (f": {m.group(3)[:200]}" if m.group(3) else "")))
    return out


@dataclass
class Verdict:
    """The reading of one launch of a user workload: its figures, the ops that failed,
    the reason when nothing could be measured, and the text the parser read."""

    parsed: parsers.Parsed | None = None
    failed_ops: list[tuple[str, str]] = field(default_factory=list)
    reason: str = ""  # "" when the cell measured something


def judge(uw: UserWorkload, out: Output, argv: list[str]) -> Verdict:
    """Pure: what one run of the command measured, or why it measured nothing."""
    tail = _last_line(out.stderr)
    if out.status is None:
        return Verdict(reason="userrun gave no exit line (the instance ended before it could)")
    if out.status == 127 and tail.startswith("userrun:"):
        return Verdict(reason=tail.removeprefix("userrun: "))
    if uw.kind == "command":
        if out.status != 0:
            why = f"{argv[0]} exited with status {out.status}"
            return Verdict(reason=why + (f": {tail}" if tail else ""))
        try:
            return Verdict(parsed=parsers.parse(uw.parser, out.stdout, argv))
        except parsers.ParseError as e:
            return Verdict(reason=str(e))
    failed = failed_tests(out.stdout)
    if out.status == PYTEST_NO_TESTS:
        return Verdict(reason=f"no benchmarks: pytest collected no tests in {uw.dir}")
    if out.status not in (0, 1):  # interrupted (a collection error), an internal or usage error
        why = "; ".join(w for _, w in failed) or tail or _last_line(out.stdout)
        return Verdict(
            reason=f"pytest exited with status {out.status}" + (f": {why}" if why else "")
        )
    try:  # pytest-benchmark leaves the file empty when no benchmark ran
        parsed = parsers.parse(uw.parser, out.file or "", argv)
    except parsers.ParseError as e:
        if failed:
            return Verdict(failed_ops=failed, reason="; ".join(why for _, why in failed))
        return Verdict(reason=str(e))
    if out.status == 1 and not failed:
        failed = [("pytest", f"pytest exited with status 1: {_last_line(out.stdout)}")]
    return Verdict(parsed=parsed, failed_ops=failed)


def with_environment(text: str, env: dict[str, Any]) -> str:
    """A --benchmark-json file with the environment in its machine_info ("isobench") and
    in every benchmark's extra_info, so pytest-benchmark's own tools show where it ran."""
    try:
        doc = json.loads(text)
    except ValueError:
        return text
    if not isinstance(doc, dict):
        return text
    info = doc.setdefault("machine_info", {})
    if isinstance(info, dict):
        info["isobench"] = env
    for b in doc.get("benchmarks") or []:
        if isinstance(b, dict) and isinstance(b.setdefault("extra_info", {}), dict):
            b["extra_info"]["isobench_env"] = env.get("env")
    return json.dumps(doc, indent=2) + "\n"


def raw_path(run_dir: Path, workload: str, env: str, rnd: int, launch: int) -> Path:
    """results/<run>/raw/<workload>/<env>-r<round>-<launch>: one launch's kept files."""
    safe = re.sub(r"[^A-Za-z0-9_.=,:+-]", "_", env)
    return run_dir / "raw" / workload / f"{safe}-r{rnd}-{launch}"


def keep(base: Path, out: Output, env: dict[str, Any]) -> list[str]:
    """Write the launch's output next to the samples; the paths written (relative to the
    run directory's parent). A full disk loses the raw files, not the figures."""
    written = []
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        files = {".stdout.txt": out.stdout, ".stderr.txt": out.stderr}
        if out.file is not None:
            files[".json"] = with_environment(out.file, env)
        for suffix, text in files.items():
            if text:
                path = base.with_name(base.name + suffix)
                path.write_text(text)
                written.append(path.name)
    except OSError:
        pass
    return written


def read_launch(
    launch: Launch, uw: UserWorkload, args: tuple[str, ...], keep_at: Path, env: dict[str, Any]
) -> Launch:
    """The launch of a user workload, its userrun records replaced by the parser's figures
    (one probe-like record each) and its failures by a reason: a command that measured
    nothing makes the launch failed; single benchmarks that failed are op failures
    (launch.op_failures) next to the figures of the others."""
    if launch.status != "ok":
        return launch
    argv = list(args[args.index("--") + 1 :]) if "--" in args else list(args)
    out = reassemble(launch.records)
    launch.records = []
    launch.extra["raw"] = keep(keep_at, out, env)
    if out.truncated:
        launch.extra.setdefault("notes", []).append(f"output truncated: {', '.join(out.truncated)}")
    v = judge(uw, out, argv)
    if v.parsed is None:  # the reason says it all (the failed benchmarks included)
        launch.status, launch.reason = "failed", v.reason  # the command's stderr: under raw/
        launch.stderr_tail = ""  # the instance ran fine: its own stderr (a console) says nothing
        return launch
    launch.op_failures = v.failed_ops
    for f in v.parsed.figures:
        note = "; ".join(n for n in v.parsed.notes if n.startswith(f"{f.op}:"))
        launch.records.append(
            {
                "probe": PROBE,
                "op": f.op,
                "iterations": 1,
                "elapsed_ns": 0,
                "metrics": {f.metric: f.value},
                "units": {f.metric: f.unit},
                "note": note,
            }
        )
    return launch


def read_recorded(
    s: Settings, launch: Launch, base: dict[str, Any], described: dict[str, Any]
) -> Launch:
    """A user workload's launch read by its parser, its output kept under raw/: `base` is
    the launch's sample fields, `described` its environment as the manifest has it."""
    workload = base["workload"]
    env = {
        "env": base["env"],
        "kind": base["env_kind"],
        "spec": base["spec"],
        "versions": described.get("versions", {}),
        "emulated": bool(described.get("emulated")),
        "rootfs": (described.get("rootfs") or {}).get("key"),
        "run_id": s.run_id,
        "round": base["round"],
        "launch": base["launch"],
    }
    at = raw_path(s.run_dir, workload, base["env"], base["round"], base["launch"])
    args = (
        launch.userrun_args or s.workloads[workload].invocation(quick=s.quick, emulated=False).args
    )  # a server's client: the argv it ran with, its address in
    return read_launch(launch, s.user[workload], args, at, env)
