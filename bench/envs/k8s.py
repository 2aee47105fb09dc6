"""`k8s`: a pod per launch on a Kubernetes cluster, through its API server with the
official `kubernetes` client (a kubeconfig and a context), RuntimeClasses by name.

NOT RUN AGAINST A REAL CLUSTER: no kubelet or kube-apiserver can run where isobench is
developed, so this kind has been tested only against a stand-in of the API server
(tests/k8s_standin.py), which implements the calls made here and moves pods through
their phases without running anything (a serving probe excepted: it runs that one on
its own host, so pods/attach has something to answer). Its timings and output are not
measurements.

A launch is one bare pod (restartPolicy Never), not a Job: a Job puts the job
controller between the submit and the pod (its own queue and latency, which are the
controller's, not isolation's), retries a failed probe unless told not to, and its
pod is removed by cascading deletion; a bare pod is the path every pod takes
(scheduler → kubelet → CRI → runtime handler) and nothing else, and a failure stays
one failure with its exit code.

Phases (ns since submit, this host's CLOCK_MONOTONIC when the event arrived: the API's
own timestamps have one second resolution): created (the create call returned),
scheduled (the watch first showed a node), started (the container running), ready (the
probe's `ready` line arrived on the followed pod log), exit (the container terminated),
cleaned (the watch saw the object deleted: the kubelet confirmed the pod's end).
Stop = delete with a grace period: the kubelet sends SIGTERM, the hold probe exits 0.
A probe in serve mode (stdin open) is driven over pods/attach (k8s_pod.PodInstance.ask).

The pod: requests = limits (Guaranteed QoS with both cpus and memory), nothing
privileged, no host namespace, no service-account token; the probes' image from a
registry the user pushed it to (option image, see push_commands). Objects carry the
labels isobench=1, isobench.run=<run id>, isobench.env=<the environment's prefix>;
`isobench clean` lists labelled pods and namespaces of the configured cluster.
"""

from __future__ import annotations

import contextlib
import re
import time
from typing import Any

from bench import footprint as fp
from bench.envs.base import (
    Availability,
    Context,
    Environment,
    Instance,
    Invocation,
    Leftover,
    MemorySize,
    Option,
    OptionError,
    StartError,
)
from bench.envs.image import REPOSITORY, WORKDIR, image_tag, probe_path
from bench.envs.k8s_client import CALL_S, Client, K8sError, contexts, kubeconfig_problem
from bench.envs.k8s_cluster import (
    PROBE_S,
    check,
    cluster_facts,
    namespace,
    runtime_classes,
    versions,
)
from bench.envs.k8s_pod import LABEL, PodInstance, PodWatcher, pod_manifest

UNTESTED = (
    "tested only against a stand-in of the API server (tests/k8s_standin.py), "
    "never against a real cluster"
)
NS_CHECK_S = 0.2  # polling while a deleted namespace goes


class DnsLabel(str):
    """A namespace or RuntimeClass name: lower-case letters, digits and '-'."""

    PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

    def __new__(cls, text: str):
        if not cls.PATTERN.match(text):
            raise ValueError(text)
        return super().__new__(cls, text)


class ImageRef(str):
    """An image reference a cluster pulls: registry.example.com/team/isobench-probes[:tag]."""

    PATTERN = re.compile(r"^[a-z0-9][\w.:/-]*(@sha256:[0-9a-f]{64})?$", re.IGNORECASE)

    def __new__(cls, text: str):
        if not cls.PATTERN.match(text) or text.endswith((":", "/")):
            raise ValueError(text)
        return super().__new__(cls, text)


DnsLabel.__name__ = "DNS label like isobench"
ImageRef.__name__ = "image reference like registry.example.com/isobench-probes"


def has_tag(ref: str) -> bool:
    """True when the reference names a tag or a digest (not only a repository)."""
    return "@" in ref or ":" in ref.rsplit("/", 1)[-1]


def image_for(ref: str, bundle_hash: str) -> str:
    """The reference pods pull: a repository gets the bundle's tag (as pushed by
    push_commands); a reference with a tag or digest is taken as it is."""
    return ref if has_tag(ref) else f"{ref}:{bundle_hash}"


def push_commands(bundle_hash: str, repository: str) -> list[list[str]]:
    """How to put the bundle's image (imported by the docker kind, or by
    `docker import` of the bundle's rootfs tar) where a cluster can pull it."""
    target = f"{repository}:{bundle_hash}"
    return [["docker", "tag", image_tag(bundle_hash), target], ["docker", "push", target]]


# ---------------------------------------------------------------- the environment


class K8sEnv(Environment):
    kind = "k8s"
    summary = (
        "a pod per launch on a Kubernetes cluster through its API server, "
        "RuntimeClass by name (" + UNTESTED + ")"
    )
    options = {
        "kubeconfig": Option(
            None, "kubeconfig file(s) (default: $KUBECONFIG, then ~/.kube/config)"
        ),
        "context": Option(None, "kubeconfig context (default: its current context)"),
        "namespace": Option(
            "isobench", "namespace of the pods; made (and removed) when missing", type=DnsLabel
        ),
        "runtime_class": Option(
            None,
            "RuntimeClass of the pods, e.g. gvisor (default: none, the cluster's default handler)",
            type=DnsLabel,
        ),
        "node": Option(None, "pin the pods to this node (nodeName: no scheduler)"),
        "image": Option(
            None,
            "the probes' image where the cluster pulls it: a repository "
            "(the bundle hash is the tag) or a full reference",
            type=ImageRef,
        ),
        "cpus": Option(None, "CPU limit in CPUs, requests = limits (e.g. 0.5)", type=float),
        "memory": Option(None, "memory limit, requests = limits (e.g. 512m)", type=MemorySize),
    }
    channel = True  # serve mode: the API's pods/attach stream (k8s_pod.PodInstance.ask)

    def __init__(self, config: dict[str, Any], ctx: Context):
        super().__init__(config, ctx)
        self._client: Client | None = None
        self._watcher: PodWatcher | None = None
        self._bundle = None
        self._image: str | None = None
        self._version: dict[str, Any] = {}
        self._made_namespace = False  # ours to remove
        self._info: dict[str, Any] = {}
        self._notes: list[str] = []

    @classmethod
    def probe(cls, opts: dict[str, Any] | None = None) -> Availability:
        try:
            o = cls.parse(opts)
        except OptionError as e:
            return Availability(False, str(e))
        problem = kubeconfig_problem(o["kubeconfig"])
        if problem:
            return Availability(False, problem)
        try:
            import kubernetes  # noqa: F401
        except ImportError:
            return Availability(False, "the kubernetes client is missing: pip install kubernetes")
        try:
            client = Client(o["kubeconfig"], o["context"])
        except K8sError as e:
            return Availability(False, e.message)
        try:
            problem, version = check(client, o)
        finally:
            client.close()
        if problem:
            return Availability(False, problem)
        return Availability(True, f"k8s:{client.context}: {UNTESTED}", versions(version))

    @classmethod
    def details(cls) -> list[tuple[str, Availability]]:
        rows = [("k8s (real cluster)", Availability(False, f"not run on one: {UNTESTED}"))]
        o = cls.parse({})
        if kubeconfig_problem(o["kubeconfig"]):
            return rows
        try:
            client = Client(o["kubeconfig"], o["context"])
        except K8sError:
            return rows
        try:
            for name in runtime_classes(client):
                rows.append((f"k8s:runtime_class={name}", cls.probe({"runtime_class": name})))
        finally:
            client.close()
        return rows

    @classmethod
    def target(cls, opts: dict[str, Any] | None = None) -> str:
        try:
            o = cls.parse(opts)
            if o["context"]:
                return f"k8s:{o['context']}"
            if kubeconfig_problem(o["kubeconfig"]):
                return "k8s:(no kubeconfig)"
            return f"k8s:{contexts(o['kubeconfig'])[1] or '(no current context)'}"
        except Exception:  # noqa: BLE001 - never raises: an unreadable kubeconfig
            return "k8s:(unreadable kubeconfig)"

    @classmethod
    def target_facts(cls, opts: dict[str, Any] | None = None) -> dict[str, Any]:
        """The cluster: its API server's version, its nodes (kernel, OS, container
        runtime, kubelet), the pinned node's only when `node` is set. Never raises."""
        facts: dict[str, Any] = {"kind": "kubernetes cluster", "tested": UNTESTED}
        try:
            o = cls.parse(opts)
            client = Client(o["kubeconfig"], o["context"])
        except (OptionError, K8sError) as e:
            return {**facts, "error": str(e)}
        facts.update(context=client.context, server=client.server)
        try:
            version = client.version(timeout=PROBE_S)
            if o["node"]:
                nodes = [client.call("GET node", client.core.read_node, o["node"])]
            else:
                nodes = client.call("LIST nodes", client.core.list_node).get("items") or []
            facts.update(cluster_facts(version, nodes))
        except K8sError as e:
            facts["error"] = str(e)
        finally:
            client.close()
        return facts

    @classmethod
    def variants(cls) -> list[str]:
        """--all runs k8s only where a kubeconfig is found (and then needs `image` too:
        the run says so); a host without a cluster is not asked about one."""
        return [] if kubeconfig_problem(None) else [cls.kind]

    @classmethod
    def leftovers(cls, opts: dict[str, Any] | None = None) -> list[Leftover]:
        """Pods and namespaces labelled isobench=1 in the configured cluster (none looked
        for without a kubeconfig); an unreachable cluster raises (clean says so)."""
        o = cls.parse(opts)
        if kubeconfig_problem(o["kubeconfig"]):
            return []
        client = Client(o["kubeconfig"], o["context"])
        try:
            return _leftovers(client, o)
        finally:
            client.close()

    # -- lifecycle

    @property
    def _labels(self) -> dict[str, str]:
        return {LABEL: "1", "isobench.run": self.ctx.run_id, "isobench.env": self.ctx.prefix}

    def prepare(self, bundle) -> None:
        o = self.opts
        if not o["image"]:
            steps = "; ".join(
                " ".join(c) for c in push_commands(bundle.hash, f"REGISTRY/{REPOSITORY}")
            )
            raise OptionError(
                f"k8s needs image=REGISTRY/{REPOSITORY}: the probe image must be "
                f"where the cluster pulls from ({steps}; README, Kubernetes)"
            )
        self._bundle = bundle
        self._image = image_for(o["image"], bundle.hash)
        try:
            self._client = Client(o["kubeconfig"], o["context"])
            self._info = {"context": self._client.context, "server": self._client.server}
            problem, self._version = check(self._client, o)
            if problem:
                raise RuntimeError(problem)
            self._ensure_namespace()
            self._info["namespace_made_by_isobench"] = self._made_namespace
            self._watcher = PodWatcher(
                self._client, o["namespace"], f"{LABEL}.env={self.ctx.prefix}"
            )
            self._watcher.start()
        except BaseException:
            self._cleanup()
            raise

    def _ensure_namespace(self) -> None:
        ns = self.opts["namespace"]
        if namespace(self._client, ns) is not None:
            return
        body = {
            "metadata": {
                "name": ns,
                "labels": {
                    **self._labels,
                    # the probes run as root with the runtime's default capabilities
                    "pod-security.kubernetes.io/enforce": "baseline",
                },
                "annotations": {"isobench.maker": self.ctx.prefix},
            }
        }
        try:
            self._client.call("CREATE namespace", self._client.core.create_namespace, body)
            self._made_namespace = True
        except K8sError as e:
            if e.status != 409:  # 409: made meanwhile by someone else: not ours
                raise

    def _start(self, inv: Invocation, timeout: float) -> Instance:
        if self._client is None or self._watcher is None:
            raise RuntimeError("k8s: start() before prepare()")
        o = self.opts
        name = self.new_name()
        manifest = pod_manifest(
            name,
            namespace=o["namespace"],
            labels=self._labels,
            image=self._image,
            argv=inv.argv(probe_path(inv.probe), WORKDIR),
            workdir=WORKDIR,
            runtime_class=o["runtime_class"],
            node=o["node"],
            cpus=o["cpus"],
            memory_bytes=o["memory"].bytes() if o["memory"] else None,
            annotations={"isobench.workload": inv.workload, "isobench.bundle": self._bundle.hash},
            stdin=inv.serves,
        )
        state = self._watcher.track(name)
        t_submit = time.monotonic_ns()
        try:
            self._client.call(
                "CREATE pod",
                self._client.core.create_namespaced_pod,
                o["namespace"],
                manifest,
                timeout=min(CALL_S, timeout),
            )
        except BaseException as e:
            self._watcher.forget(name)
            refused = isinstance(e, K8sError) and e.status is not None
            if not refused:  # no answer, or stopped: it may have been made all the same
                with contextlib.suppress(K8sError):
                    self._client.call(
                        "DELETE pod",
                        self._client.core.delete_namespaced_pod,
                        name,
                        o["namespace"],
                        grace_period_seconds=0,
                    )
            if isinstance(e, K8sError):
                raise StartError(f"{name}: {e}") from None
            raise
        with state.cond:
            state.t["created"] = time.monotonic_ns()
        return PodInstance(
            self._client, o["namespace"], self._watcher, state, timeout, t_submit, inv.serves
        )

    def _cleanup(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        try:
            ns = self.opts["namespace"]
            selector = f"{LABEL}.env={self.ctx.prefix}"
            with contextlib.suppress(K8sError):  # what our instances did not remove
                for pod in _list(client, ns, selector):
                    with contextlib.suppress(K8sError):
                        client.call(
                            "DELETE pod",
                            client.core.delete_namespaced_pod,
                            pod["metadata"]["name"],
                            ns,
                            grace_period_seconds=1,
                        )
                _wait_gone(client, ns, selector, 30.0)
            if self._watcher is not None:
                self._watcher.stop()
                self._notes.extend(self._watcher.problems[-5:])
                self._watcher = None
            if self._made_namespace:
                self._remove_namespace(client, ns)
        finally:
            client.close()

    def _remove_namespace(self, client: Client, ns: str) -> None:
        """Our namespace goes unless another environment's pods are in it still."""
        try:
            others = _list(client, ns, f"{LABEL}=1")
            if others:
                self._notes.append(f"namespace {ns} kept: {len(others)} other isobench pods in it")
                return
            client.call("DELETE namespace", client.core.delete_namespace, ns)
            deadline = time.monotonic() + 30.0
            while namespace(client, ns, CALL_S) is not None and time.monotonic() < deadline:
                time.sleep(NS_CHECK_S)
            self._made_namespace = False
        except K8sError as e:
            self._notes.append(f"namespace {ns}: {e}")

    def disk_footprint(self, bundle, io, timeout) -> list[dict[str, Any]]:
        """Not measured: the image lives in the cluster nodes' stores."""
        return [fp.missing("image", "not measured: the image lives in the cluster nodes' stores")]

    def describe(self) -> dict[str, Any]:
        o = self.opts
        return {
            **super().describe(),
            "tested": UNTESTED,
            "api_server": self._version.get("gitVersion"),
            "api_server_version": dict(self._version),
            **self._info,
            "namespace": o["namespace"],
            "runtime_class": o["runtime_class"] or "(none: the cluster's default handler)",
            "node": o["node"] or "(the scheduler's choice)",
            "image": self._image,
            "image_is_bundle_tag": bool(
                self._bundle and self._image and self._image.endswith(":" + self._bundle.hash)
            ),
            "launch": "bare pod, restartPolicy Never, imagePullPolicy IfNotPresent",
            "seccomp": "no profile in the pod spec: the kubelet's default",
            "qos": "Guaranteed"
            if o["cpus"] and o["memory"]
            else ("Burstable" if o["cpus"] or o["memory"] else "BestEffort"),
            "timing": "client-side watch and followed log, this host's monotonic clock",
            "bundle": self._bundle.hash if self._bundle else None,
            "notes": list(self._notes),
        }


# ---------------------------------------------------------------- leftovers


def _list(client: Client, ns: str, selector: str) -> list[dict[str, Any]]:
    found = client.call("LIST pods", client.core.list_namespaced_pod, ns, label_selector=selector)
    return found.get("items") or []


def _wait_gone(client: Client, ns: str, selector: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while _list(client, ns, selector):
        if time.monotonic() >= deadline:
            return False
        time.sleep(NS_CHECK_S)
    return True


def _leftovers(client: Client, o: dict[str, Any]) -> list[Leftover]:
    where = f"k8s:{client.context}"
    selector = f"{LABEL}=1"
    try:  # every namespace when allowed, else the configured one
        pods = (
            client.call(
                "LIST pods", client.core.list_pod_for_all_namespaces, label_selector=selector
            ).get("items")
            or []
        )
    except K8sError as e:
        if e.status != 403:
            raise
        pods = _list(client, o["namespace"], selector)
    out = []
    for pod in pods:
        meta = pod["metadata"]
        name, ns = meta["name"], meta["namespace"]

        def remove(name=name, ns=ns) -> None:
            cl = Client(o["kubeconfig"], o["context"])
            try:
                cl.call(
                    "DELETE pod", cl.core.delete_namespaced_pod, name, ns, grace_period_seconds=1
                )
            except K8sError as e:
                if e.status != 404:
                    raise
            finally:
                cl.close()

        out.append(Leftover(f"k8s pod {ns}/{name} at {where}", remove))
    try:
        namespaces = (
            client.call("LIST namespaces", client.core.list_namespace, label_selector=selector).get(
                "items"
            )
            or []
        )
    except K8sError as e:
        if e.status != 403:
            raise
        namespaces = []
    for item in namespaces:
        meta = item["metadata"]
        if meta.get("deletionTimestamp"):
            continue  # going already
        maker = (meta.get("annotations") or {}).get("isobench.maker", "?")

        def remove_ns(name=meta["name"]) -> None:
            cl = Client(o["kubeconfig"], o["context"])
            try:
                cl.call("DELETE namespace", cl.core.delete_namespace, name)
            except K8sError as e:
                if e.status != 404:
                    raise
            finally:
                cl.close()

        out.append(
            Leftover(f"k8s namespace {meta['name']} at {where} (made by {maker})", remove_ns)
        )
    return out
