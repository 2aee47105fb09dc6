"""The Kubernetes API client of the `k8s` kind: the official `kubernetes` package, a
kubeconfig and a context, the few calls the kind makes, each with a deadline (a cluster
that does not answer must never hang the harness), answers as plain dicts (the JSON the
API server sent), and line streams (a watch, a followed pod log) that another thread
can end at once."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CONNECT_S = 3.0  # connecting to the API server
CALL_S = 15.0  # one request/response call
DEFAULT_KUBECONFIG = "~/.kube/config"


class K8sError(RuntimeError):
    """An API call failed: `call` names it; `status` is the HTTP status (403, 404, 409…),
    None when the API server was not reached or did not answer in time."""

    def __init__(self, call: str, message: str, status: int | None = None):
        super().__init__(f"{call}: {message}")
        self.call = call
        self.status = status
        self.message = message


# ---------------------------------------------------------------- the kubeconfig


def kubeconfig_paths(option: str | None) -> list[Path]:
    """The kubeconfig files to read: the option, else $KUBECONFIG (a path list, as
    kubectl reads it), else ~/.kube/config."""
    text = option or os.environ.get("KUBECONFIG") or DEFAULT_KUBECONFIG
    return [Path(p).expanduser() for p in text.split(os.pathsep) if p]


def kubeconfig_problem(option: str | None) -> str:
    """ "" when a kubeconfig file is there, else the one line saying where none is."""
    paths = kubeconfig_paths(option)
    if any(p.is_file() for p in paths):
        return ""
    where = ", ".join(str(p) for p in paths)
    return f"no kubeconfig at {where} (set KUBECONFIG or k8s:kubeconfig=PATH)"


def _existing(option: str | None) -> str:
    return os.pathsep.join(str(p) for p in kubeconfig_paths(option) if p.is_file())


def contexts(option: str | None) -> tuple[list[str], str | None]:
    """The kubeconfig's context names and its current context (pure file reading)."""
    from kubernetes import config

    found, current = config.list_kube_config_contexts(_existing(option))
    return [c["name"] for c in found], (current or {}).get("name")


# ---------------------------------------------------------------- the client


class Client:
    """CoreV1, NodeV1 and Version over one ApiClient; every call has a deadline and
    returns the API server's JSON as a dict."""

    def __init__(self, kubeconfig: str | None, context: str | None):
        import urllib3
        from kubernetes import client, config
        from kubernetes.config.config_exception import ConfigException

        problem = kubeconfig_problem(kubeconfig)
        if problem:
            raise K8sError("kubeconfig", problem)
        path = _existing(kubeconfig)
        cfg = type.__call__(client.Configuration)  # not the package's shared default
        cfg.retries = urllib3.Retry(total=0, read=False)  # a deadline means one try
        try:
            names, current = contexts(kubeconfig)
            self.context = context or current
            if context and context not in names:
                raise K8sError(
                    "kubeconfig",
                    f"no context {context!r} in {path} (it has {', '.join(names) or 'none'})",
                )
            self.api = config.new_client_from_config(
                config_file=path, context=context, persist_config=False, client_configuration=cfg
            )
        except (ConfigException, OSError, ValueError, KeyError) as e:
            raise K8sError("kubeconfig", f"{path}: {_first_line(str(e))}") from None
        self.server = cfg.host
        self.core = client.CoreV1Api(self.api)
        self.nodev1 = client.NodeV1Api(self.api)
        self.versions = client.VersionApi(self.api)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.api.close()

    # -- one request, one answer
    def call(self, name: str, method, *args, timeout: float = CALL_S, **kwargs) -> dict[str, Any]:
        """`method` of one of the APIs with a deadline; its JSON answer; K8sError."""
        resp = self._request(name, method, *args, timeout=timeout, **kwargs)
        try:
            return json.loads(resp.data or b"{}")
        except ValueError:
            raise K8sError(name, "the answer is not JSON") from None
        except Exception as e:  # noqa: BLE001 - the body timed out or the connection broke
            raise K8sError(name, _first_line(str(e))) from None

    def _request(
        self, name: str, method, *args, timeout: float, read: float | None = -1.0, **kwargs
    ):
        from kubernetes.client.exceptions import ApiException

        if timeout <= 0:
            raise K8sError(name, "no time left")
        read_s = timeout if read == -1.0 else read
        try:
            return method(
                *args,
                _preload_content=False,
                _request_timeout=(min(CONNECT_S, timeout), read_s),
                **kwargs,
            )
        except ApiException as e:
            raise K8sError(name, _api_message(e), e.status or None) from None
        except Exception as e:  # noqa: BLE001 - urllib3's errors: refused, timed out, TLS
            raise K8sError(name, _first_line(_cause(e))) from None

    def text(self, name: str, method, *args, timeout: float = CALL_S, **kwargs) -> str:
        resp = self._request(name, method, *args, timeout=timeout, **kwargs)
        try:
            return (resp.data or b"").decode(errors="replace")
        except Exception as e:  # noqa: BLE001
            raise K8sError(name, _first_line(str(e))) from None

    def stream(self, name: str, method, *args, **kwargs) -> Stream:
        """A request whose answer is a stream of lines (watch=True, follow=True): it
        returns once the server has answered with its headers (the watch is then in
        place); no read deadline (the caller ends it with Stream.end())."""
        return Stream(self._request(name, method, *args, timeout=CALL_S, read=None, **kwargs))

    # -- the calls the kind makes
    def version(self, timeout: float = CALL_S) -> dict[str, Any]:
        return self.call("GET /version", self.versions.get_code, timeout=timeout)

    def attach(self, name: str, namespace: str, container: str, timeout: float):
        """A WebSocket attach to `container`'s stdin and stdout (pods/attach), opened as
        the official client opens it (kubernetes.stream, `v4.channel.k8s.io`), on an
        ApiClient of its own: stream() swaps its ApiClient's request method while it
        runs, which the watch and log threads on the shared one must never see. A
        wschannel.WsChannel; ChannelError within `timeout` s."""
        from kubernetes import client
        from kubernetes.stream import stream

        from bench.envs.wschannel import WsChannel, open_bounded

        what = f"pod {name}"

        def opener() -> WsChannel:
            api = client.ApiClient(configuration=self.api.configuration)
            try:
                ws = stream(
                    client.CoreV1Api(api).connect_get_namespaced_pod_attach,
                    name,
                    namespace,
                    container=container,
                    stdin=True,
                    stdout=True,
                    stderr=False,
                    tty=False,
                    _preload_content=False,
                    binary=True,
                )
            except Exception as e:  # noqa: BLE001 - ApiException(status 0): the handshake's reason
                reason = str(getattr(e, "reason", None) or e)
                raise K8sError("ATTACH pod", handshake_reason(reason)) from None
            finally:
                with contextlib.suppress(Exception):
                    api.close()
            return WsChannel(ws.sock, what)

        return open_bounded(opener, timeout, what)


class Stream:
    """The lines of a streamed answer, as they arrive; end() (from any thread) makes the
    reader's iteration stop at once."""

    def __init__(self, resp):
        self.resp = resp
        self.ended = False

    def lines(self) -> Iterator[str]:
        buf = b""
        try:
            for chunk in self.resp.stream(amt=None, decode_content=False):
                *complete, buf = (buf + chunk).split(b"\n")
                for raw in complete:
                    yield raw.decode(errors="replace")
        except Exception:  # noqa: BLE001 - ended, or the connection broke: the stream ends
            if not self.ended:
                raise
        if buf and not self.ended:
            yield buf.decode(errors="replace")

    def end(self) -> None:
        self.ended = True
        with contextlib.suppress(Exception):
            self.resp.shutdown()
        with contextlib.suppress(Exception):
            self.resp.close()


def handshake_reason(text: str) -> str:
    """Pure: websocket-client's refused handshake ("Handshake status 400 Bad Request
    -+-+- {headers} -+-+- {body}") -> the status and the API's Status message, one line."""
    parts = text.split(" -+-+- ")
    status = _first_line(parts[0])
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        body = json.loads(parts[-1]) if len(parts) > 2 else {}
        if body.get("message"):
            return _first_line(f"{status.removeprefix('Handshake status ')}: {body['message']}")
    return status


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or [""])[0][:300]


def _cause(e: BaseException) -> str:
    """urllib3's MaxRetryError wraps the reason (connection refused, timed out)."""
    reason = getattr(e, "reason", None)
    return str(reason) if reason is not None else str(e)


def _api_message(e) -> str:
    """The Status message an API server sends with an error, else the HTTP reason."""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        body = json.loads(e.body)
        if body.get("message"):
            return _first_line(body["message"])
    return f"{e.status} {e.reason}".strip()
