"""Host-side metrics of process trees (containerd-shim, runsc-sandbox, qemu...), via psutil.

Processes come and go while they are read: one that vanishes or refuses is skipped,
never raised. CPU times include the reaped children of each process (psutil's
children_user / children_system), so a tree's total does not drop when a descendant
exits and is waited for between two readings.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable

import psutil

MIB = 2**20
GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


def _child_pids(pid: int) -> list[int] | None:
    """Direct children from /proc/PID/task/*/children; None where the kernel lacks them."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []  # gone
    out: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out.extend(int(x) for x in f.read().split())
        except FileNotFoundError:
            if os.path.exists(f"/proc/{pid}/task/{tid}"):
                return None  # no CONFIG_PROC_CHILDREN
        except OSError:
            continue
    return out


def _tree_pids(pids: Iterable[int]) -> list[int] | None:
    """The given pids and their descendants, cheaply (no full /proc scan); None: unknown."""
    seen: dict[int, None] = {}
    todo = [p for p in pids if psutil.pid_exists(p)]
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen[pid] = None
        children = _child_pids(pid)
        if children is None:
            return None
        todo.extend(children)
    return list(seen)


def _tree(
    pids: Iterable[int], cache: dict[int, psutil.Process] | None = None
) -> list[psutil.Process]:
    """The given processes and all their live descendants, each once.

    `cache` (pid -> Process) lets a sampler reuse Process objects between calls.
    """
    pids = list(pids)
    found: dict[int, psutil.Process] = {}
    fast = _tree_pids(pids)
    if fast is not None:
        for pid in fast:
            proc = cache.get(pid) if cache is not None else None
            if proc is None:
                try:
                    proc = psutil.Process(pid)
                except GONE:
                    continue
            found[pid] = proc
    else:  # full /proc scan through psutil
        for pid in pids:
            try:
                proc = psutil.Process(pid)
                found.setdefault(pid, proc)
                for child in proc.children(recursive=True):
                    found.setdefault(child.pid, child)
            except GONE:
                continue
    if cache is not None:
        cache.clear()
        cache.update(found)
    return list(found.values())


def _pss(proc: psutil.Process) -> int | None:
    try:
        return proc.memory_full_info().pss
    except (*GONE, AttributeError, OSError):  # AttributeError: no pss on this platform
        return None


def tree_metrics(pids: list[int]) -> dict[str, float]:
    """Summed metrics of `pids` and their descendants.

    Keys: cpu_user_ms, cpu_system_ms, rss_mib, pss_mib (only if at least one process's
    PSS was readable), num_ctx_switches_vol, num_ctx_switches_invol, nprocs.
    """
    user = system = rss = vol = invol = 0.0
    pss: float | None = None
    nprocs = 0
    for proc in _tree(pids):
        try:
            with proc.oneshot():
                t = proc.cpu_times()
                mem = proc.memory_info()
                ctx = proc.num_ctx_switches()
        except GONE:
            continue
        user += t.user + t.children_user
        system += t.system + t.children_system
        rss += mem.rss
        vol += ctx.voluntary
        invol += ctx.involuntary
        nprocs += 1
        p = _pss(proc)
        if p is not None:
            pss = (pss or 0.0) + p
    out = {
        "cpu_user_ms": user * 1000,
        "cpu_system_ms": system * 1000,
        "rss_mib": rss / MIB,
        "num_ctx_switches_vol": vol,
        "num_ctx_switches_invol": invol,
        "nprocs": float(nprocs),
    }
    if pss is not None:
        out["pss_mib"] = pss / MIB
    return out


def find_processes(predicate: Callable[[psutil.Process], bool]) -> list[int]:
    """Pids of processes for which predicate(proc) is true; races and refusals skip."""
    out = []
    for proc in psutil.process_iter():
        try:
            if predicate(proc):
                out.append(proc.pid)
        except GONE:
            continue
    return out


class PeakSampler:
    """Samples the RSS (and PSS) sum of a process tree in a daemon thread; keeps the peak.

    PSS costs the kernel a page-table walk per process (smaps_rollup); pass pss=False
    to sample RSS only. A sample is followed by a wait of `interval`, or longer where
    the sample cost more than `cpu_share` of that: the walk grows with the tree's
    memory (3-5 ms for a held cpu probe of a quick run, 3-5% of a CPU at the host's
    100 ms; 8% in validate's), and a sampler of a held instance runs beside the other
    instances' bursts. stop() reports what the sampler thread itself cost in CPU.
    """

    def __init__(
        self, pids: list[int], interval: float = 0.05, pss: bool = True, cpu_share: float = 0.005
    ):
        self.pids = list(pids)
        self.interval = interval
        self.cpu_share = cpu_share
        self.pss = pss
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._rss_peak = 0
        self._pss_peak = 0
        self._samples = 0
        self._cpu_s = 0.0
        self._procs: dict[int, psutil.Process] = {}

    def _sample(self) -> None:
        rss = pss = 0
        for proc in _tree(self.pids, self._procs):
            try:
                rss += proc.memory_info().rss
            except GONE:
                continue
            if self.pss:
                pss += _pss(proc) or 0
        self._rss_peak = max(self._rss_peak, rss)
        self._pss_peak = max(self._pss_peak, pss)
        self._samples += 1

    def _run(self) -> None:
        start = time.thread_time()
        try:
            while True:
                before = time.thread_time()
                self._sample()
                cost = time.thread_time() - before
                if self._stop.wait(max(self.interval, cost / self.cpu_share)):
                    break
            self._sample()  # one last look at the moment of stop()
        finally:
            self._cpu_s = time.thread_time() - start

    def start(self) -> PeakSampler:
        if self._thread is not None:
            raise RuntimeError("PeakSampler already started")
        self._thread = threading.Thread(target=self._run, name="isobench-peak-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> dict[str, float]:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        out = {
            "rss_peak_mib": self._rss_peak / MIB,
            "samples": float(self._samples),
            "sampler_cpu_ms": self._cpu_s * 1000,
        }
        if self.pss:
            out["pss_peak_mib"] = self._pss_peak / MIB
        return out
