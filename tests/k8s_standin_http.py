"""The k8s stand-in's HTTP face (tests/k8s_standin.py tells the whole stand-in): the
handler of its server, routing the calls the `k8s` kind makes (version; namespaces;
runtimeclasses and nodes; pods: create, get, list, watch, delete; a pod's log) to
StandIn, with pods/attach from tests/k8s_standin_attach.py; a bearer token; the API's
Status objects for errors."""

from __future__ import annotations

import copy
import json
import socket
import time
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlparse

from tests.k8s_standin_attach import AttachRoute

if TYPE_CHECKING:
    from tests.k8s_standin import StandIn

VERSION = {
    "major": "1",
    "minor": "30",
    "gitVersion": "v1.30.0+isobench-standin",
    "gitCommit": "standin",
    "platform": "linux/amd64 (isobench stand-in: no cluster)",
}
TOKEN = "isobench-standin-token"


def api_status(code: int, reason: str, message: str) -> dict:
    """The API's Status object of a failure (an error answer's body)."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _matches(obj: dict, labels: dict[str, str], fields: dict[str, str]) -> bool:
    meta = obj.get("metadata") or {}
    have = meta.get("labels") or {}
    if any(have.get(k) != v for k, v in labels.items()):
        return False
    values = {"metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace")}
    return all(values.get(k) == v for k, v in fields.items())


def _selector(text: str) -> dict[str, str]:
    out = {}
    for part in filter(None, (text or "").split(",")):
        key, _, value = part.partition("=")
        out[key.strip()] = value.lstrip("=").strip()
    return out


class Handler(AttachRoute, BaseHTTPRequestHandler):
    api: StandIn
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def setup(self) -> None:
        super().setup()  # no Nagle: headers and body are separate writes here
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # -- answers
    def _refuse(self, code: int, reason: str, message: str) -> None:
        self._json(code, api_status(code, reason, message))

    def _json(self, code: int, obj: dict) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()
        self.close_connection = True

    def _body(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"{}")

    # -- routing
    def do_GET(self):
        self._route("GET")

    def do_POST(self):
        self._route("POST")

    def do_DELETE(self):
        self._route("DELETE")

    def _route(self, method: str) -> None:
        api = self.api
        url = urlparse(self.path)
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        parts = [p for p in url.path.split("/") if p]
        with api.lock:
            api.requests.append((method, url.path, dict(q)))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self._json(401, api_status(401, "Unauthorized", "Unauthorized"))
        try:
            if method == "DELETE" and self.headers.get("Content-Length"):
                q.update({k: v for k, v in self._body().items() if k == "gracePeriodSeconds"})
            return self._dispatch(method, parts, q)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _dispatch(self, method: str, parts: list[str], q: dict) -> None:
        api = self.api
        if parts == ["version"]:
            return self._json(200, VERSION)
        if parts[:3] == ["apis", "node.k8s.io", "v1"] and parts[3:4] == ["runtimeclasses"]:
            return self._get_or_list(parts[4:], api.runtime_classes, "RuntimeClassList", q)
        if parts[:2] != ["api", "v1"]:
            return self._json(404, api_status(404, "NotFound", "the stand-in does not serve this"))
        rest = parts[2:]
        if rest[:1] == ["nodes"]:
            return self._get_or_list(rest[1:], api.nodes, "NodeList", q)
        if rest == ["pods"] and method == "GET":
            if not api.cluster_list:
                return self._json(
                    403,
                    api_status(
                        403, "Forbidden", "pods is forbidden: cannot list pods at the cluster scope"
                    ),
                )
            return self._pods(None, q)
        if rest[:1] != ["namespaces"]:
            return self._json(404, api_status(404, "NotFound", "the stand-in does not serve this"))
        if len(rest) == 1:
            if method == "POST":
                return self._create_namespace(q)
            return self._get_or_list([], api.namespaces, "NamespaceList", q)
        ns = rest[1]
        if ns in api.forbidden and len(rest) > 2:
            return self._json(
                403,
                api_status(
                    403,
                    "Forbidden",
                    f'pods is forbidden: User "standin" '
                    f'cannot list resource "pods" in '
                    f'the namespace "{ns}"',
                ),
            )
        if len(rest) == 2:
            if method == "DELETE":
                return self._json(*api.delete_namespace(ns))
            return self._get_or_list([ns], api.namespaces, "NamespaceList", q)
        if rest[2:3] != ["pods"]:
            return self._json(404, api_status(404, "NotFound", "the stand-in does not serve this"))
        name = rest[3] if len(rest) > 3 else None
        if name is None and method == "POST":
            return self._json(*api.create_pod(ns, self._body()))
        if name is None:
            return self._pods(ns, q)
        if rest[4:] == ["log"]:
            return self._log(ns, name, q)
        if rest[4:] == ["attach"]:
            return self._attach(ns, name, q)
        if method == "DELETE":
            grace = q.get("gracePeriodSeconds")
            return self._json(*api.delete_pod(ns, name, None if grace is None else int(grace)))
        with api.lock:
            pod = copy.deepcopy(api.pods.get((ns, name)))
        if pod is None:
            return self._json(404, api_status(404, "NotFound", f'pods "{name}" not found'))
        return self._json(200, pod)

    def _get_or_list(self, rest: list[str], store: dict, list_kind: str, q: dict) -> None:
        with self.api.lock:
            if rest:
                obj = store.get(rest[0])
                if obj is None:
                    return self._json(404, api_status(404, "NotFound", f'"{rest[0]}" not found'))
                return self._json(200, copy.deepcopy(obj))
            labels = _selector(q.get("labelSelector", ""))
            items = [copy.deepcopy(o) for o in store.values() if _matches(o, labels, {})]
        return self._json(
            200,
            {
                "kind": list_kind,
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(self.api.rv)},
                "items": items,
            },
        )

    def _create_namespace(self, q: dict) -> None:
        api = self.api
        meta = self._body().get("metadata") or {}
        name = meta.get("name", "")
        with api.lock:
            if name in api.forbidden:
                return self._json(
                    403, api_status(403, "Forbidden", f'namespaces "{name}" is forbidden')
                )
            if name in api.namespaces:
                return self._json(
                    409, api_status(409, "AlreadyExists", f'namespaces "{name}" already exists')
                )
            ns = api._namespace(name, meta.get("labels"), meta.get("annotations"))
            if q.get("dryRun") != "All":
                api.namespaces[name] = ns
        return self._json(201, ns)

    def _pods(self, ns: str | None, q: dict) -> None:
        api = self.api
        labels = _selector(q.get("labelSelector", ""))
        fields = _selector(q.get("fieldSelector", ""))
        if ns is not None:
            fields["metadata.namespace"] = ns
        if str(q.get("watch")).lower() in ("true", "1"):
            return self._watch(labels, fields, q)
        with api.lock:
            items = [copy.deepcopy(p) for p in api.pods.values() if _matches(p, labels, fields)]
            rv = api.rv
        if q.get("limit"):
            items = items[: int(q["limit"])]
        return self._json(
            200,
            {
                "kind": "PodList",
                "apiVersion": "v1",
                "metadata": {"resourceVersion": str(rv)},
                "items": items,
            },
        )

    def _watch(self, labels: dict, fields: dict, q: dict) -> None:
        api = self.api
        self._start_stream("application/json")
        with api.lock:
            since = int(q.get("resourceVersion") or 0)
            if since:
                pending = [(k, p) for rv, k, p in api.events if rv > since]
            else:  # no resourceVersion: what there is now, then changes
                pending = [("ADDED", copy.deepcopy(p)) for p in api.pods.values()]
                since = api.rv
        deadline = time.monotonic() + int(q.get("timeoutSeconds") or 3600)
        while True:
            for kind, pod in pending:
                if _matches(pod, labels, fields):
                    self._chunk(json.dumps({"type": kind, "object": pod}).encode() + b"\n")
            with api.lock:
                while api.rv == since and not api.stopping.is_set():
                    if time.monotonic() >= deadline:
                        return self._end_stream()
                    api.lock.wait(0.2)
                if api.stopping.is_set():
                    return self._end_stream()
                pending = [(k, p) for rv, k, p in api.events if rv > since]
                since = api.rv

    def _log(self, ns: str, name: str, q: dict) -> None:
        api = self.api
        key = (ns, name)
        with api.lock:
            pod = api.pods.get(key)
            if pod is None:
                return self._json(404, api_status(404, "NotFound", f'pods "{name}" not found'))
            states = [cs.get("state") or {} for cs in pod["status"].get("containerStatuses") or []]
            if not any("running" in s or "terminated" in s for s in states):
                return self._json(
                    400,
                    api_status(
                        400,
                        "BadRequest",
                        f'container "probe" in pod "{name}" is waiting to start: ContainerCreating',
                    ),
                )
        stamps = str(q.get("timestamps")).lower() in ("true", "1")
        follow = str(q.get("follow")).lower() in ("true", "1")
        self._start_stream("text/plain")
        sent = 0
        while True:
            with api.lock:
                lines = list(api.logs.get(key, []))
                pod = api.pods.get(key)
                ended = pod is None or any(
                    "terminated" in (cs.get("state") or {})
                    for cs in pod["status"].get("containerStatuses") or []
                )
            for stamp, line in lines[sent:]:
                self._chunk(((stamp + " ") if stamps else "").encode() + line.encode() + b"\n")
            sent = len(lines)
            if not follow or ended or api.stopping.is_set():
                return self._end_stream()
            with api.lock:
                if len(api.logs.get(key, [])) == sent:
                    api.lock.wait(0.2)
