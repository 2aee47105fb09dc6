"""The cluster as the k8s kind checks and describes it: whether a configuration can run on
it (reachable, its RuntimeClass, node and namespace), and what it is (the API server's
version, each node's facts)."""

from __future__ import annotations

from typing import Any

from bench.envs.k8s_client import CALL_S, Client, K8sError

PROBE_S = 5.0  # each call of an availability check


def check(client: Client, o: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The first problem with this configuration on its cluster ("" when none) and the
    API server's version. Each check one line."""
    try:
        version = client.version(timeout=PROBE_S)
    except K8sError as e:
        return f"context {client.context} unreachable: {e.message}", {}
    rc = o["runtime_class"]
    if rc:
        try:
            client.call("GET runtimeclass", client.nodev1.read_runtime_class, rc, timeout=PROBE_S)
        except K8sError as e:
            if e.status != 404:
                return f"RuntimeClass {rc}: {e.message}", version
            names = runtime_classes(client)
            have = f" (the cluster has: {', '.join(names)})" if names else " (the cluster has none)"
            return f"RuntimeClass {rc} not found{have}", version
    if o["node"]:
        try:
            client.call("GET node", client.core.read_node, o["node"], timeout=PROBE_S)
        except K8sError as e:
            return f"node {o['node']}: {'not found' if e.status == 404 else e.message}", version
    ns = o["namespace"]
    try:
        client.call("LIST pods", client.core.list_namespaced_pod, ns, limit=1, timeout=PROBE_S)
        if not namespace(client, ns, PROBE_S):  # it will be made: may we?
            client.call(
                "CREATE namespace",
                client.core.create_namespace,
                {"metadata": {"name": ns}},
                dry_run="All",
                timeout=PROBE_S,
            )
    except K8sError as e:
        if e.status == 403:
            return f"namespace {ns} forbidden: {e.message}", version
        return f"namespace {ns}: {e.message}", version
    return "", version


def runtime_classes(client: Client) -> list[str]:
    try:
        found = client.call(
            "LIST runtimeclasses", client.nodev1.list_runtime_class, timeout=PROBE_S
        )
    except K8sError:
        return []
    return sorted(i["metadata"]["name"] for i in found.get("items") or [])


def namespace(client: Client, ns: str, timeout: float = CALL_S) -> dict[str, Any] | None:
    try:
        return client.call("GET namespace", client.core.read_namespace, ns, timeout=timeout)
    except K8sError as e:
        if e.status == 404:
            return None
        raise


def versions(version: dict[str, Any]) -> dict[str, str]:
    return {"kubernetes": str(version.get("gitVersion", ""))} if version else {}


def node_facts(node: dict[str, Any]) -> dict[str, Any]:
    """Pure: a Node object -> what it is (the kubelet's report)."""
    info = (node.get("status") or {}).get("nodeInfo") or {}
    cap = (node.get("status") or {}).get("capacity") or {}
    return {
        "name": (node.get("metadata") or {}).get("name"),
        "kernel": info.get("kernelVersion"),
        "os": info.get("osImage"),
        "container_runtime": info.get("containerRuntimeVersion"),
        "kubelet": info.get("kubeletVersion"),
        "arch": info.get("architecture"),
        "cpu_count": cap.get("cpu"),
        "memory": cap.get("memory"),
    }


def cluster_facts(version: dict[str, Any], nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """Pure: the API server's version and the nodes' facts; the facts every node shares
    (kernel, os, runtime…) also at the top, as a host's are, for comparisons."""
    per_node = [node_facts(n) for n in nodes]
    out: dict[str, Any] = {
        "api_server": version.get("gitVersion"),
        "api_server_platform": version.get("platform"),
        "nodes": per_node,
    }
    for key in ("kernel", "os", "container_runtime", "kubelet", "arch", "cpu_count"):
        values = {n[key] for n in per_node}
        if len(values) == 1:
            out[key] = values.pop()
        elif values:
            out[key] = "mixed: " + ", ".join(sorted(map(str, values)))
    return out
