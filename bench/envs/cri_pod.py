"""One pod of the `cri` kind: how it is started (`_Pod`), watched and ended
(`PodInstance`), and how whatever it made is removed also when its runtime hangs.

A probe in serve mode gets its control channel through the CRI's own Attach, as
`kubectl attach -i` reaches a container: the container is created with stdin open
(stdin_once false, no tty); the first ask() calls Attach, which returns a URL of the
runtime's streaming server, and opens it as a WebSocket (`channel.k8s.io`: stdin is
channel 0, stdout 1; wschannel.py); commands go in, answers are read from the stream.
Chosen over a FIFO pair mounted into the container because it is the CRI's interface,
works for any runtime handler whose shim carries stdin (a host FIFO is not reachable
through gVisor's gofer, nor into a VM-based runtime), and needs no option of the probe.
The answers also reach the CRI log; they are left out of the launch's records."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import time
import uuid
from pathlib import Path

from bench import interrupt
from bench.envs import containers as ct
from bench.envs import cri_daemon as dmn
from bench.envs.base import (
    ChannelError,
    Environment,
    Instance,
    Invocation,
    Launch,
    StartError,
    conclude,
    read_probe_output,
)
from bench.envs.cri_client import CALL_S, Client, CriError, mono_offset, parse_cri_log, socket_path
from bench.envs.wschannel import WsChannel, without
from bench.metrics.cgroup import CFS_PERIOD_US, Cgroup, CgroupError, Layout
from bench.probeio import is_ready

KILL_CALL_S = 5.0
POLL_S = 0.005  # log and status polling while waiting for `ready` / exit
LOG_NAME = "probe.log"
POD_NAMESPACE = "isobench"
LABEL = "isobench"


# ---------------------------------------------------------------- one pod


class _Pod:
    """Starts one pod (sandbox, container) and hands back its instance; on any failure
    removes what it made and raises StartError, except a deadline: that gives an
    instance already ended with status timeout (a hung runtime is a launch's verdict)."""

    def __init__(self, env: Environment, inv: Invocation, timeout: float):  # a CriEnv
        self.env = env
        self.cl: Client = env._client
        self.inv = inv
        self.timeout = timeout
        self.name = env.new_name()
        self.t_submit = time.monotonic_ns()
        self.deadline = time.monotonic() + timeout
        self.logs = env.ctx.scratch / self.name
        self.cgroup: Cgroup | None = None
        self.sid: str | None = None
        self.cid: str | None = None
        self.phases: dict[str, int] = {}
        self.labels = {
            LABEL: "1",
            "isobench.run": env.ctx.run_id,
            "isobench.prefix": env.ctx.prefix,
            "isobench.name": self.name,
        }

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def mark(self, phase: str) -> None:
        self.phases[phase] = time.monotonic_ns() - self.t_submit

    def resources(self):
        pb = self.cl.pb
        o = self.env.opts
        res = pb.LinuxContainerResources()
        if o["cpus"]:
            res.cpu_period = CFS_PERIOD_US
            res.cpu_quota = round(o["cpus"] * CFS_PERIOD_US)
            res.cpu_shares = max(2, round(o["cpus"] * 1024))  # requests = limits
        if o["memory"]:
            res.memory_limit_in_bytes = o["memory"].bytes()
        return res

    def sandbox_config(self):
        pb = self.cl.pb
        host = self.env.opts["network"] == "host"
        mode = pb.NamespaceMode
        ns = pb.NamespaceOption(
            network=mode.NODE if host else mode.POD, pid=mode.CONTAINER, ipc=mode.POD
        )
        linux = pb.LinuxPodSandboxConfig(
            security_context=pb.LinuxSandboxSecurityContext(namespace_options=ns),
            resources=self.resources(),
        )
        if self.cgroup is not None:
            linux.cgroup_parent = "/" + self.name
        return (
            pb.PodSandboxConfig(
                metadata=pb.PodSandboxMetadata(
                    name=self.name, uid=uuid.uuid4().hex, namespace=POD_NAMESPACE, attempt=0
                ),
                hostname="" if host else self.name[-63:],  # a kubelet leaves it empty: no UTS ns
                log_directory=str(self.logs),
                labels=self.labels,
                linux=linux,
            ),
            ns,
        )

    def start(self) -> Instance:
        pb = self.cl.pb
        env = self.env
        phase = "RunPodSandbox"
        try:
            self.logs.mkdir(parents=True)
            if env._owns_cgroups:
                self.cgroup = Cgroup.create(self.name, cpus=env.opts["cpus"])
            config, ns = self.sandbox_config()
            req = pb.RunPodSandboxRequest(config=config, runtime_handler=env.opts["runtime"])
            self.sid = self.cl.call(phase, req, self.left()).pod_sandbox_id
            self.mark("sandbox")
            phase = "CreateContainer"
            container = pb.ContainerConfig(
                metadata=pb.ContainerMetadata(name="probe", attempt=0),
                image=pb.ImageSpec(image=env.image_ref),
                command=self.inv.argv(env.probe_path(self.inv.probe), env.workdir),
                working_dir=env.workdir,
                log_path=LOG_NAME,
                labels=self.labels,
                stdin=self.inv.serves,  # the control channel (Attach); stays open across attaches
                stdin_once=False,
                linux=pb.LinuxContainerConfig(
                    resources=self.resources(),
                    security_context=pb.LinuxContainerSecurityContext(namespace_options=ns),
                ),
            )
            req = pb.CreateContainerRequest(
                pod_sandbox_id=self.sid, config=container, sandbox_config=config
            )
            self.cid = self.cl.call(phase, req, self.left()).container_id
            self.mark("created")
            phase = "StartContainer"
            self.cl.call(phase, pb.StartContainerRequest(container_id=self.cid), self.left())
            self.mark("started")
            return PodInstance(self)
        except CriError as e:
            if e.deadline:
                return PodInstance(
                    self, failed=f"{e.call} did not return within {self.timeout:g} s: pod removed"
                )
            with interrupt.shielded():
                self.teardown()
            raise StartError(f"{self.name}: {e}") from None
        except (CgroupError, OSError) as e:
            with interrupt.shielded():
                self.teardown()
            raise StartError(f"could not set up {self.name}: {e}") from None
        except BaseException:
            with interrupt.shielded():
                self.teardown()
            raise

    def teardown(self, hung: bool = False, keep_cgroup: bool = False) -> list[str]:
        """Stop and remove the pod, whatever state it is in (a hung runtime's shim is
        killed first: its runtime would not answer a stop), then the log directory and
        (unless kept to be read) the pod cgroup. Returns what could not be done the
        ordinary way."""
        problems = []
        sids = [self.sid] if self.sid else []
        if hung or not sids:  # RunPodSandbox may still be at work: end it
            self.kill_shims()
        if not sids:
            with contextlib.suppress(CriError):
                sids = [p.id for p in self.cl.pods({"isobench.name": self.name})]
        for sid in sids:
            try:
                self.cl.remove_pod(sid)
            except CriError as e:
                problems.append(str(e))
                self.kill_shims()
                try:
                    self.cl.remove_pod(sid)
                except CriError as e2:
                    problems.append(f"after killing its shim: {e2}")
        shutil.rmtree(self.logs, ignore_errors=True)
        if not keep_cgroup:
            self.remove_cgroup()
        return problems

    def kill_shims(self) -> None:
        """Kill the shim (and what runs under it) serving this pod: found among the
        endpoint's shims by the sandbox name in its bundle's config.json."""
        for shim in dmn.shims_of(Path(socket_path(self.env._endpoint))):
            try:
                bundle = Path(shim.cwd())
                spec = json.loads((bundle / "config.json").read_text())
            except (OSError, ValueError, Exception):  # noqa: BLE001 - psutil errors too
                continue
            annotations = spec.get("annotations") or {}
            if annotations.get("io.kubernetes.cri.sandbox-name") == self.name:
                dmn.kill_tree(shim)

    def remove_cgroup(self) -> None:
        if self.cgroup is not None:
            Layout.detect().remove(self.name)
            self.cgroup = None


class PodInstance(Instance):
    """A started pod: `ready` from its CRI log, exit through a pidfd on the probe's
    process (or ContainerStatus), stop = StopContainer (SIGTERM, then SIGKILL after
    the grace), end = StopPodSandbox + RemovePodSandbox."""

    def __init__(self, pod: _Pod, failed: str = ""):
        super().__init__(pod.name, pod.timeout, pod.t_submit)
        self.pod = pod
        self.cl = pod.cl
        self.failed = failed
        self.offset = mono_offset()
        self.log_path = pod.logs / LOG_NAME
        self._seen = 0  # bytes of the log read while waiting for `ready`
        self.t_ready_seen: int | None = None
        self.t_exit: int | None = None
        self.status = None  # the last ContainerStatus
        self.pidfd: int | None = None
        self.sampler: ct.HostSideSampler | None = None
        self.daemon_cpu0 = self._daemon_cpu()
        self.notes: list[str] = []
        self.unresponsive = False  # a CRI call on this pod ran out of time
        self.path = ""  # the network path taken, once address() was asked
        self.channel: WsChannel | None = None  # serve mode: the attach stream, once asked
        self.answered: list[str] = []  # the answers taken: not records of the launch
        if not failed:
            self._watch()

    def address(self, port: int) -> tuple[str, int]:
        """network=host: loopback (the node's namespace); pod: the pod's IP, which the
        CNI plugin routes to the pod's veth (PodSandboxStatus says which it is)."""
        if self.failed or self.pod.sid is None:
            raise StartError(self.failed or f"{self.name}: no pod")
        if self.pod.env.opts["network"] == "host":
            self.path = f"node network (hostNetwork pod): loopback 127.0.0.1:{port}"
            return ("127.0.0.1", port)
        req = self.cl.pb.PodSandboxStatusRequest(pod_sandbox_id=self.pod.sid)
        try:
            st = self.cl.call("PodSandboxStatus", req, max(0.1, min(CALL_S, self.left()))).status
        except CriError as e:
            raise StartError(f"{self.name}: the pod's IP: {e}") from None
        ip = st.network.ip if st.HasField("network") else ""
        if not ip:
            raise StartError(f"{self.name}: the pod has no IP (PodSandboxStatus network)")
        cni = self.pod.env._info.get("cni") or {}
        how = f"CNI {cni['plugin']}" if cni.get("plugin") else "CNI"
        routed = ", routed, no NAT" if cni.get("ip_masq") is False else ""
        self.path = f"pod network ({how}{routed}): pod IP {ip}:{port}"
        return (ip, port)

    # -- watching
    def _watch(self) -> None:
        pod = self.pod
        pids: set[int] = set()
        if pod.cgroup is not None:
            reader = Layout.detect().reader(f"{pod.name}/{pod.cid}")
            with contextlib.suppress(OSError, CgroupError):
                pids = reader.pids() if reader else set()
        if len(pids) == 1:
            with contextlib.suppress(OSError):
                self.pidfd = os.pidfd_open(pids.pop())
        pause = self._pause_pid()
        sid, cid = pod.sid, pod.cid

        def carriers() -> dict[int, str]:
            found = ct.find_carriers(sid)
            found.update({p: r for p, r in ct.find_carriers(cid).items() if p not in found})
            if pause:
                found[pause] = "pause"
            return found

        self.sampler = ct.HostSideSampler(carriers, find_every=0.1)
        self.sampler.__enter__()
        self.watchers.append(self.sampler)

    def _pause_pid(self) -> int | None:
        pod = self.pod
        if pod.cgroup is None:
            return None
        reader = Layout.detect().reader(f"{pod.name}/{pod.sid}")
        with contextlib.suppress(OSError, CgroupError):
            pids = reader.pids() if reader else set()
            return min(pids) if pids else None
        return None

    def _daemon_cpu(self) -> float | None:
        daemon = self.pod.env._daemon
        pid = daemon.pid() if daemon else None
        if pid is None:
            return None
        import psutil

        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            return (t.user + t.system) * 1000
        return None

    def _read_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def _container_status(self, timeout: float):
        pb = self.cl.pb
        req = pb.ContainerStatusRequest(container_id=self.pod.cid)
        self.status = self.cl.call("ContainerStatus", req, timeout).status
        return self.status

    def _exited(self, timeout: float) -> bool:
        st = self._container_status(timeout)
        return st.state == self.cl.pb.ContainerState.CONTAINER_EXITED

    # -- the control channel
    def ask(self, command: str, timeout: float) -> str:
        """Serve mode: `command` on the probe's stdin over the CRI attach stream (opened
        at the first ask, within its timeout), its next stdout line back."""
        if not self.pod.inv.serves:
            raise ChannelError(f"{self.name}: started without a control channel (not serving)")
        if self.launch is not None or self.failed:
            raise ChannelError(f"{self.name}: the instance has ended")
        if self.t_ready_seen is None:
            raise ChannelError(f"{self.name}: asked before the probe said `ready`")
        if self.channel is None:
            self.channel = self._attach(timeout)
        answer = self.channel.ask(command, timeout)
        self.answered.append(answer)
        return answer

    def _attach(self, timeout: float) -> WsChannel:
        deadline = time.monotonic() + timeout
        pb = self.cl.pb
        req = pb.AttachRequest(
            container_id=self.pod.cid, stdin=True, tty=False, stdout=True, stderr=True
        )
        try:
            url = self.cl.call("Attach", req, min(CALL_S, timeout)).url
        except CriError as e:
            raise ChannelError(f"{self.name}: {e}") from None
        return WsChannel.connect(url, deadline - time.monotonic(), self.name)

    # -- the Instance hooks
    def _ready(self, timeout: float) -> bool:
        if self.failed:
            return False
        deadline = time.monotonic() + timeout
        while True:
            text = self._read_log()
            if len(text) > self._seen:
                self._seen = len(text)
                if any(s == "stdout" and is_ready(line) for _, s, line in parse_cri_log(text)):
                    self.t_ready_seen = time.monotonic_ns()
                    return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)

    def _signal_stop(self) -> None:
        if self.failed:
            return
        pb = self.cl.pb
        grace = max(1, round(self.left()))
        req = pb.StopContainerRequest(container_id=self.pod.cid, timeout=grace)
        try:
            self.cl.call("StopContainer", req, grace + KILL_CALL_S)
        except CriError as e:  # _wait_exit sees it still running; _kill follows
            self.notes.append(str(e))
            self.unresponsive |= e.deadline

    def _wait_exit(self, timeout: float) -> bool:
        if self.failed:
            return True
        deadline = time.monotonic() + timeout
        if self.pidfd is not None and self.t_exit is None:
            ready, _, _ = select.select([self.pidfd], [], [], max(0.0, timeout))
            if not ready:
                return False
            self.t_exit = time.monotonic_ns()
        while True:  # the runtime's view: the container EXITED (a few ms after the pidfd)
            try:
                if self._exited(max(0.1, min(CALL_S, deadline - time.monotonic()))):
                    if self.t_exit is None:
                        self.t_exit = time.monotonic_ns()
                    return True
            except CriError as e:
                if time.monotonic() >= deadline:
                    self.notes.append(str(e))
                    return False
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S if self.pidfd is not None else 4 * POLL_S)

    def _kill(self) -> None:
        if self.failed or self.pod.cid is None:
            return
        pb = self.cl.pb
        req = pb.StopContainerRequest(container_id=self.pod.cid, timeout=0)
        try:
            self.cl.call("StopContainer", req, KILL_CALL_S)
        except CriError as e:
            self.notes.append(f"kill: {e}")
            self.unresponsive |= e.deadline
            if self.pod.cgroup is not None:  # the runtime does not answer: kill the pod
                with contextlib.suppress(CgroupError, OSError):
                    self.pod.cgroup.kill_all()

    def _end(self, *, stopped: bool, timed_out: bool) -> Launch:
        pod = self.pod
        try:
            launch = self._collect(stopped=stopped, timed_out=timed_out)
        finally:
            with interrupt.shielded():
                if self.channel is not None:
                    self.channel.close()
                if self.sampler is not None:
                    self.sampler.stop()
                problems = pod.teardown(
                    hung=bool(self.failed) or self.unresponsive, keep_cgroup=True
                )
        if pod.cgroup is not None:
            reader = Layout.detect().reader(pod.name)
            with contextlib.suppress(OSError, CgroupError):
                launch.cgroup = reader.read() if reader else {}
        with interrupt.shielded():
            pod.remove_cgroup()
            if self.pidfd is not None:
                with contextlib.suppress(OSError):
                    os.close(self.pidfd)
                self.pidfd = None
        cpu1 = self._daemon_cpu()
        if self.daemon_cpu0 is not None and cpu1 is not None:
            launch.host_side["containerd_cpu_ms"] = round(cpu1 - self.daemon_cpu0, 3)
        if problems or self.notes:
            launch.extra["cri_problems"] = [*self.notes, *problems]
        if self.path:
            launch.net_path = self.path
        return launch

    def _collect(self, *, stopped: bool, timed_out: bool) -> Launch:
        pod = self.pod
        launch = Launch(phases=dict(pod.phases))
        launch.extra = {"name": pod.name, "pod_sandbox_id": pod.sid, "container_id": pod.cid}
        if self.failed:
            launch.status, launch.reason = "timeout", self.failed
            return launch
        if self.sampler is not None:
            self.sampler.stop()
            launch.host_side = self.sampler.result()
        exit_code = None
        if not timed_out:
            with contextlib.suppress(CriError):
                st = self.status if self.status is not None else self._container_status(CALL_S)
                if st.state == self.cl.pb.ContainerState.CONTAINER_EXITED:
                    exit_code = st.exit_code
                    launch.extra["cri_reason"] = st.reason
        t_ready = None
        out_lines: list[str] = []
        stderr: list[str] = []
        for wall_ns, stream, line in parse_cri_log(self._read_log()):
            if stream == "stderr":
                stderr.append(line)
            elif t_ready is None and is_ready(line):
                t_ready = wall_ns - self.offset
            elif t_ready is not None:
                out_lines.append(line)
        if t_ready is not None:
            launch.phases["ready"] = max(1, t_ready - pod.t_submit)
            if self.t_ready_seen is not None:
                launch.extra["ready_seen_ns"] = self.t_ready_seen - pod.t_submit
        finished = self.status.finished_at if self.status is not None else 0
        if finished > 0:  # the shim's own time of the exit (it reaped the probe)
            launch.phases["exit"] = max(1, finished - self.offset - pod.t_submit)
            if self.t_exit is not None:
                launch.extra["exit_seen_ns"] = self.t_exit - pod.t_submit
        elif self.t_exit is not None:
            launch.phases["exit"] = self.t_exit - pod.t_submit
        read_probe_output(launch, without(out_lines, self.answered))
        return conclude(
            launch,
            ready=t_ready is not None,
            exit_code=exit_code,
            timed_out=timed_out,
            stopped=stopped,
            timeout=self.timeout,
            stderr="\n".join(stderr),
            killed="pod removed",
        )
