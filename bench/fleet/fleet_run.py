"""One fleet run, start to end: resolve the hosts, build the wheels, run the play, keep
fleet.json current as hosts finish; on Ctrl-C (or SIGTERM) interrupt the play, then stop
the remote runs, clean and remove the scratch on every host reached (stop.yml).

Exit status: 0 every host done, 1 some host failed (the last line says how many were
done), 130 interrupted (143 on SIGTERM). User errors raise InventoryError."""

from __future__ import annotations

import json
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import interrupt
from bench.fleet import ansible_run, events, inventory, wheelhouse
from bench.fleet.results import Fleet, HostRecord
from bench.scratch import mark as scratch_mark


@dataclass(frozen=True)
class FleetOptions:
    inventory: Path
    matrix: Path | None
    run_args: list[str]  # for `isobench run` on every host
    results: Path
    limit: str | None
    forks: int
    prepare: bool
    command: list[str]
    fleet_id: str


def say(line: str) -> None:
    print(f"isobench: fleet: {line}", file=sys.stderr, flush=True)


def _extra_vars(opts: FleetOptions, wheels, scratch: str, fetched: Path) -> dict:
    return {
        "isobench_fleet_id": opts.fleet_id,
        "isobench_scratch": scratch,
        "isobench_hostside": str(ansible_run.HOSTSIDE),
        "isobench_wheels_tar": str(wheels.tar),
        "isobench_wheel": wheels.isobench,
        "isobench_pip_wheel": wheels.pip,
        "isobench_want_python": wheels.python,
        "isobench_prepare": opts.prepare,
        "isobench_run_args": opts.run_args,
        "isobench_matrix": str(opts.matrix.resolve()) if opts.matrix else "",
        "isobench_fetch_dir": str(fetched),
    }


def _stop(fleet: Fleet, opts: FleetOptions, work: Path, scratch: str) -> None:
    """stop.yml on every host the play reached, with further signals held off: the
    remote runs get their SIGINT, isobench clean runs there, the scratch goes."""
    reached = [h.name for h in fleet.hosts if h.status != "unreachable" and h.facts]
    if not reached:
        return
    say(f"stopping the runs and cleaning up on {', '.join(reached)}")
    stop_vars = work / "stop.json"
    stop_vars.write_text(
        json.dumps({"isobench_scratch": scratch, "isobench_hostside": str(ansible_run.HOSTSIDE)})
    )
    argv = ansible_run.playbook_argv(
        ansible_run.STOP, opts.inventory, stop_vars, max(len(reached), 1), ",".join(reached)
    )

    def on_event(e: dict) -> None:
        if e.get("event") == "ok" and e.get("task") == "stop":
            say(f"{e['host']}: {(e.get('result') or {}).get('stdout', '').strip()}")
        elif e.get("event") in ("failed", "unreachable"):
            say(f"{e.get('host')}: could not clean up: {e.get('msg')}")

    ansible_run.close_connections(work)
    env = {**ansible_run.environment(work, cp="cp-stop"), "ANSIBLE_SSH_RETRIES": "3"}
    held = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        ansible_run.run(argv, env, fleet.root / "ansible.log", on_event)
    finally:
        for s, h in held.items():
            signal.signal(s, h)


def execute(opts: FleetOptions) -> int:
    # the controller's own files (Ansible's temp files and sockets, the wheels' tar),
    # marked as a scratch directory: `isobench clean` removes it after a kill -9
    work = Path(tempfile.mkdtemp(prefix="isobench-fleetctl-"))
    scratch_mark(work, run_id=f"fleet-{opts.fleet_id}")
    try:
        return _execute(opts, work)
    finally:
        ansible_run.close_connections(work)
        shutil.rmtree(work, ignore_errors=True)


def _execute(opts: FleetOptions, work: Path) -> int:
    env = ansible_run.environment(work)
    hosts = inventory.resolve(opts.inventory, opts.limit, env)
    root = opts.results / f"fleet-{opts.fleet_id}"
    fleet = Fleet(
        root,
        opts.fleet_id,
        str(opts.inventory),
        opts.command,
        opts.forks,
        [HostRecord(h.name) for h in hosts],
        time.time(),
    )
    fleet.save(time.time())
    say(f"{len(hosts)} host(s), {opts.forks} at a time; results in {root}")
    scratch = f"/var/tmp/isobench-fleet-{opts.fleet_id}"
    fetched = work / "fetched"
    fetched.mkdir()
    try:
        wheels = wheelhouse.build(work)
        vars_file = work / "vars.json"
        vars_file.write_text(json.dumps(_extra_vars(opts, wheels, scratch, fetched)))
        argv = ansible_run.playbook_argv(
            ansible_run.PLAYBOOK, opts.inventory, vars_file, opts.forks, opts.limit
        )

        def on_event(e: dict) -> None:
            with open(root / "events.jsonl", "a") as log:  # what Ansible said, for a reader
                log.write(json.dumps(e) + "\n")
            if events.apply(fleet, e, fetched, lambda h, line: say(f"{h}: {line}")):
                fleet.save(time.time())

        rc = ansible_run.run(argv, env, root / "ansible.log", on_event)
    except (KeyboardInterrupt, interrupt.Interrupted) as e:
        code = e.exit_code if isinstance(e, interrupt.Interrupted) else 130
        say("interrupted")
        _stop(fleet, opts, work, scratch)
        for h in fleet.hosts:
            if h.started is not None and h.ended is None:
                h.ended = time.time()
            h.finish("interrupted", "the fleet run was interrupted")
        fleet.ended = time.time()
        fleet.save(fleet.ended)
        say(f"interrupted: {_tally(fleet)}; {root / 'fleet.json'}")
        return code
    for h in fleet.hosts:  # the play ended without a word about this host
        if h.finish("run-failed", f"ansible-playbook exited {rc} (see {root / 'ansible.log'})"):
            say(f"{h.name}: run failed: {h.reason}")
    fleet.ended = time.time()
    fleet.save(fleet.ended)
    done = sum(h.status == "done" for h in fleet.hosts)
    say(f"{_tally(fleet)}; {root}")
    return 0 if done == len(fleet.hosts) else 1


def _tally(fleet: Fleet) -> str:
    done = sum(h.status == "done" for h in fleet.hosts)
    return f"{done} of {len(fleet.hosts)} host(s) done"
