"""Ansible stdout callback: one JSON line per event on stdout, for `isobench fleet` to
read while the playbook runs (as ansible-runner reads its event stream). Ansible loads
this file by path (ANSIBLE_CALLBACK_PLUGINS); isobench never imports it.

An event: {"event": "start"|"ok"|"failed"|"unreachable"|"skipped", "host": name,
"task": the task's name, "time": controller's epoch seconds, "msg": one line or null,
"result": the few result fields isobench uses (facts subset, command start/end, rc)}."""

from __future__ import annotations

import json
import sys
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
name: isobench_events
type: stdout
short_description: JSON lines for isobench fleet
description: One JSON object per task result on stdout.
"""

FACTS = (
    "ansible_hostname",
    "ansible_kernel",
    "ansible_distribution",
    "ansible_distribution_version",
    "ansible_processor",
    "ansible_processor_vcpus",
    "ansible_memtotal_mb",
    "ansible_virtualization_type",
    "ansible_virtualization_role",
    "ansible_python_version",
)
FIELDS = ("rc", "start", "end", "stdout", "changed")


def _cause(result: dict) -> str:
    """What the module's exception said ("[Errno 2] No such file..."), or ""."""
    exc = result.get("exception")
    if isinstance(exc, dict):
        exc = exc.get("msg") or exc.get("message")
    if not isinstance(exc, str):
        return ""
    lines = [ln.strip() for ln in exc.strip().splitlines() if ln.strip()]
    if lines and lines[-1] != "(traceback unavailable)":
        return lines[-1]
    # ansible-core 2.19 keeps the OSError out of the result: name what it ran
    cmd = result.get("cmd")
    return f"{cmd.split()[0]} could not be run" if isinstance(cmd, str) and cmd else ""


def _one_line(result: dict) -> str | None:
    """The line that says why a task failed: stderr's last line, else the module's msg
    (with what its exception said)."""
    for key in ("stderr", "msg", "module_stderr", "stdout"):
        text = result.get(key)
        if isinstance(text, str) and text.strip():
            lines = [ln for ln in text.strip().splitlines() if ln.strip()]
            if key == "msg" or not lines:
                line = " ".join(text.split())
                cause = _cause(result)
                if cause and cause not in line:
                    line = f"{line.rstrip('.')}: {cause}"
                return line[:400]
            return lines[-1].strip()[:400]
    return None


def _facts(result: dict) -> dict:
    facts = result.get("ansible_facts") or {}
    out = {k: facts.get(k) for k in FACTS if k in facts}
    proc = out.get("ansible_processor")
    if isinstance(proc, list):  # [index, vendor, model, index, vendor, model...]
        models = [p for p in proc if isinstance(p, str) and not p.isdigit()]
        out["ansible_processor"] = models[-1] if models else None
    return out


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "isobench_events"

    def _emit(self, event: str, host, task, result: dict | None = None, failed=False) -> None:
        result = dict(result or {})
        line = {
            "event": event,
            "host": host.get_name() if host is not None else None,
            "task": task.get_name() if task is not None else None,
            "time": time.time(),
            "msg": _one_line(result) if failed else None,
            "result": {k: result[k] for k in FIELDS if k in result},
        }
        facts = _facts(result)
        if facts:
            line["result"]["facts"] = facts
            clock = (result.get("ansible_facts") or {}).get("ansible_date_time") or {}
            line["result"]["tz_offset"] = clock.get("tz_offset")
        sys.stdout.write(json.dumps(line, default=str) + "\n")
        sys.stdout.flush()

    def v2_runner_on_start(self, host, task):
        self._emit("start", host, task)

    def v2_runner_on_ok(self, result):
        self._emit("ok", result._host, result._task, result._result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        event = "ignored" if ignore_errors else "failed"
        self._emit(event, result._host, result._task, result._result, failed=True)

    def v2_runner_on_unreachable(self, result):
        self._emit("unreachable", result._host, result._task, result._result, failed=True)

    def v2_runner_on_skipped(self, result):
        self._emit("skipped", result._host, result._task, result._result)

    def v2_playbook_on_no_hosts_matched(self):
        sys.stdout.write(json.dumps({"event": "no_hosts"}) + "\n")
        sys.stdout.flush()
