"""The CRI client of the `cri` kind: RuntimeService and ImageService over one gRPC
channel, a deadline on every call (a hung runtime must never hang the harness), and the
CRI log format the runtime writes a container's output in.

Stubs: PyPI's `container-runtime-interface-api` (module `cri_api`, the CRI `runtime.v1`
protos generated for Python)."""

from __future__ import annotations

import contextlib
import json
import re
import time
from datetime import datetime
from typing import Any

from bench.envs import containers as ct

CALL_S = 30.0  # a CRI call outside a launch's own deadline (stop, remove, list)
CONNECT_S = 3.0


# ---------------------------------------------------------------- the CRI client


def stubs():
    from cri_api.v1 import api_pb2, api_pb2_grpc

    return api_pb2, api_pb2_grpc


class CriError(RuntimeError):
    """A CRI call failed: `call` names it, `deadline` says it ran out of time."""

    def __init__(self, call: str, message: str, deadline: bool = False):
        super().__init__(f"{call}: {message}")
        self.call = call
        self.deadline = deadline


class Client:
    """RuntimeService and ImageService over one channel; every call has a deadline."""

    def __init__(self, endpoint: str):
        import grpc

        pb, rpc = stubs()
        self.pb = pb
        self.endpoint = endpoint
        self.channel = grpc.insecure_channel(endpoint)
        self.runtime = rpc.RuntimeServiceStub(self.channel)
        self.images = rpc.ImageServiceStub(self.channel)

    def call(self, name: str, request, timeout: float, service: str = "runtime"):
        import grpc

        if timeout <= 0:
            raise CriError(name, "no time left", deadline=True)
        try:
            return getattr(getattr(self, service), name)(request, timeout=timeout)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            details = (e.details() if hasattr(e, "details") else "") or str(code)
            deadline = code == grpc.StatusCode.DEADLINE_EXCEEDED
            if deadline:
                details = f"no answer within {timeout:.3g} s"
            raise CriError(name, ct.first_line(details), deadline) from None

    def version(self, timeout: float = CONNECT_S):
        return self.call("Version", self.pb.VersionRequest(), timeout)

    def config(self, timeout: float = CONNECT_S) -> dict[str, Any]:
        """containerd's CRI config from a verbose Status ({} from other runtimes)."""
        st = self.call("Status", self.pb.StatusRequest(verbose=True), timeout)
        with contextlib.suppress(KeyError, ValueError):
            return json.loads(st.info["config"])
        return {}

    def has_image(self, ref: str) -> bool:
        pb = self.pb
        req = pb.ImageStatusRequest(image=pb.ImageSpec(image=ref))
        return bool(self.call("ImageStatus", req, CALL_S, service="images").image.id)

    def pods(self, labels: dict[str, str]):
        pb = self.pb
        req = pb.ListPodSandboxRequest(filter=pb.PodSandboxFilter(label_selector=labels))
        return list(self.call("ListPodSandbox", req, CALL_S).items)

    def remove_pod(self, sid: str, timeout: float = CALL_S) -> None:
        pb = self.pb
        self.call("StopPodSandbox", pb.StopPodSandboxRequest(pod_sandbox_id=sid), timeout)
        self.call("RemovePodSandbox", pb.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.channel.close()


def socket_path(endpoint: str) -> str:
    return endpoint.removeprefix("unix://")


def handlers_of(config: dict[str, Any]) -> list[str]:
    """Pure: the runtime handlers a containerd CRI config lists."""
    return sorted((config.get("containerd") or {}).get("runtimes") or {})


# ---------------------------------------------------------------- the CRI log (pure)


def parse_timestamp(text: str) -> int:
    """RFC 3339 with nanoseconds (what the CRI log writer stamps) -> Unix ns."""
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)$", text)
    if not m:
        raise ValueError(text)
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    seconds = int(datetime.fromisoformat(m.group(1) + tz).timestamp())
    return seconds * 1_000_000_000 + int((m.group(2) or "0").ljust(9, "0"))


def parse_cri_log(text: str) -> list[tuple[int, str, str]]:
    """The CRI log format ("<RFC3339Nano> <stdout|stderr> <P|F> <text>" per line, a long
    line split into P parts ending with an F) -> [(unix ns of its last part, stream,
    line)]. A torn last line (no newline yet) is left out."""
    out: list[tuple[int, str, str]] = []
    partial: dict[str, str] = {}
    for raw in text.split("\n")[:-1]:
        parts = raw.split(" ", 3)
        if len(parts) < 3:
            continue
        stamp, stream, tag = parts[0], parts[1], parts[2]
        content = parts[3] if len(parts) > 3 else ""
        try:
            ns = parse_timestamp(stamp)
        except ValueError:
            continue
        if tag == "P":
            partial[stream] = partial.get(stream, "") + content
            continue
        out.append((ns, stream, partial.pop(stream, "") + content))
    return out


def mono_offset() -> int:
    """Unix ns minus monotonic ns, read back to back (the tighter of three reads)."""
    best = None
    for _ in range(3):
        m0 = time.monotonic_ns()
        w = time.time_ns()
        m1 = time.monotonic_ns()
        if best is None or m1 - m0 < best[0]:
            best = (m1 - m0, w - (m0 + m1) // 2)
    return best[1]


def answers(endpoint: str) -> bool:
    """Does the CRI at `endpoint` answer a Version call within a second?"""
    cl = Client(endpoint)
    try:
        cl.version(timeout=1)
        return True
    except CriError:
        return False
    finally:
        cl.close()
