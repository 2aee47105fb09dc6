"""ansible-playbook as isobench runs it: this Python's ansible-core (`python -m
ansible.cli.playbook`), argument lists only, a private directory for Ansible's local
temp files and SSH control sockets, the shipped playbook and the isobench_events stdout
callback, whose JSON lines are handed over one by one as they come.

The user's Ansible configuration, keys and ~/.ssh/config are used as they are; host key
checking is forced on; no password is ever passed (none is asked for: a host that needs
one fails as unreachable)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

HERE = Path(__file__).resolve().parent
PLAYBOOK = HERE / "playbook.yml"
STOP = HERE / "stop.yml"
HOSTSIDE = HERE / "hostside.py"
PLUGINS = HERE / "plugins"


def environment(workdir: Path, cp: str = "cp") -> dict[str, str]:
    """The environment ansible-playbook and ansible-inventory run with; SSH control
    sockets in workdir/<cp> (the stop play after a Ctrl-C gets fresh ones: the
    interrupted play's masters may have died with it)."""
    env = dict(os.environ)
    for sub in ("tmp", cp):
        (workdir / sub).mkdir(parents=True, exist_ok=True)
    env.update(
        ANSIBLE_LOCAL_TEMP=str(workdir / "tmp"),
        ANSIBLE_SSH_CONTROL_PATH_DIR=str(workdir / cp),
        ANSIBLE_CALLBACK_PLUGINS=str(PLUGINS),
        ANSIBLE_STDOUT_CALLBACK="isobench_events",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_HOST_KEY_CHECKING="True",
        ANSIBLE_RETRY_FILES_ENABLED="False",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_INVENTORY_UNPARSED_FAILED="True",
        ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED="True",
        ANSIBLE_DEPRECATION_WARNINGS="False",
        ANSIBLE_SYSTEM_WARNINGS="False",
    )
    env.setdefault("ANSIBLE_PYTHON_INTERPRETER", "auto_silent")
    # a module per ssh command, not a file copied first: a task costs one round trip
    env.setdefault("ANSIBLE_PIPELINING", "True")
    # the wheels are compressed already: ssh's -C (Ansible's default) only costs CPU
    env.setdefault("ANSIBLE_SSH_ARGS", "-o ControlMaster=auto -o ControlPersist=60s")
    return env


def playbook_argv(
    playbook: Path, inventory: Path, extra_vars: Path, forks: int, limit: str | None
) -> list[str]:
    argv = [sys.executable, "-m", "ansible.cli.playbook", "-i", str(inventory)]
    argv += ["--forks", str(forks), "--extra-vars", f"@{extra_vars}"]
    if limit:
        argv += ["--limit", limit]
    return [*argv, str(playbook)]


class Playbook:
    """One ansible-playbook process in a session of its own (a Ctrl-C at the terminal
    reaches isobench, which decides what the play gets); its stderr goes to a log."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path):
        self.log = open(log, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            start_new_session=True,
        )

    def events(self) -> Iterable[dict]:
        """The callback's events as they come (other lines are skipped)."""
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            try:
                event = json.loads(raw)
            except ValueError:
                continue
            if isinstance(event, dict):
                yield event

    def interrupt(self, grace: float = 30) -> None:
        """SIGINT to the whole play (ansible-playbook, its forks, their ssh); SIGKILL
        what is still there after `grace` seconds."""
        for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue

    def wait(self) -> int:
        rc = self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()
        self.log.close()
        return rc


def run(argv: list[str], env: dict[str, str], log: Path, on_event: Callable[[dict], None]) -> int:
    """Run the play to its end, handing each event to on_event; its exit status. On
    KeyboardInterrupt (or isobench's Interrupted) the play is interrupted first, then
    the exception goes on."""
    play = Playbook(argv, env, log)
    try:
        for event in play.events():
            on_event(event)
    except BaseException:
        play.interrupt()
        play.wait()
        raise
    return play.wait()


def close_connections(workdir: Path) -> None:
    """End the SSH control masters Ansible left in workdir/cp (ControlPersist keeps them
    up for a minute, each holding a session on its host)."""
    for sock in sorted(workdir.glob("cp*/*")):
        subprocess.run(
            ["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "isobench-fleet"],
            capture_output=True,
            timeout=10,
            check=False,
        )
