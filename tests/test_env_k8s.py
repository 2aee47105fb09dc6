"""`k8s`: pods through a Kubernetes API server, tested against isobench's STAND-IN of
the API server (tests/k8s_standin.py): no real cluster can run where these tests run.
The stand-in runs nothing (but a serving probe, locally, so its attach has something to
answer); what is tested here is the kind's side: the manifests it sends, the calls it
makes with their deadlines, what it reads from the watch, the log and the attach
stream, availability, cleanup and leftovers."""

from __future__ import annotations

import json
import signal
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench.envs.base import (
    HOLD,
    ChannelError,
    Context,
    Invocation,
    OptionError,
    StartError,
    served,
)
from bench.envs.k8s import K8sEnv, has_tag, image_for, push_commands
from bench.envs.k8s_client import K8sError
from bench.envs.k8s_cluster import cluster_facts
from bench.envs.k8s_pod import LogFollower, PodState, pod_manifest, with_echoes
from bench.interrupt import Interrupted
from tests.k8s_standin import StandIn

BUNDLE = SimpleNamespace(hash="0123456789abcdef")  # the kind uses only the bundle's hash
SYSCALL = Invocation("syscall", "syscall", ("--op", "null", "--min-ms", "20"))
STARTUP = Invocation("startup", "startup")
IMAGE = "registry.example/isobench-probes"


@pytest.fixture
def api():
    with StandIn() as server:
        yield server


@pytest.fixture
def make_env(env_factory):
    def make(api: StandIn, **opts) -> K8sEnv:
        config = {"kubeconfig": str(api.kubeconfig), "image": IMAGE, **opts}
        return env_factory(K8sEnv, config, bundle=BUNDLE)

    return make


def _pods(api: StandIn) -> list[str]:
    return [p for p in api.pod_names() if not p.startswith("kube-system/")]


# ---------------------------------------------------------------- pure


def test_the_log_request_is_the_probe_containers_log_of_the_pod():
    """Followed by the LogFollower, read at once by the instance: the same request."""
    seen = []

    def read(*args, **kwargs):
        seen.append((args, kwargs))
        return "text"

    client = SimpleNamespace(core=SimpleNamespace(read_namespaced_pod_log="read_log"))
    follower = LogFollower(client, "ns", PodState("p"), deadline=0.0)  # past: it stops
    follower.thread.join(5)
    assert not follower.thread.is_alive() and follower.state.log_over
    assert follower.request(read, timeout=3.0) == "text"
    assert seen == [(("GET log", "read_log", "p", "ns"), {"container": "probe", "timeout": 3.0})]


def test_manifest_is_a_guaranteed_unprivileged_pod_with_its_runtime_class():
    labels = {"isobench": "1", "isobench.run": "r1", "isobench.env": "isobench-r1-e0"}
    m = pod_manifest(
        "isobench-r1-e0-1",
        namespace="isobench",
        labels=labels,
        image="reg/isobench-probes:h",
        argv=["/probes/syscall", "--op", "null"],
        workdir="/work",
        runtime_class="gvisor",
        cpus=0.5,
        memory_bytes=512 * 2**20,
    )
    assert m["kind"] == "Pod" and m["metadata"]["labels"] == labels
    spec = m["spec"]
    assert spec["restartPolicy"] == "Never" and spec["runtimeClassName"] == "gvisor"
    (c,) = spec["containers"]
    assert c["resources"]["limits"] == {"cpu": "500m", "memory": str(512 * 2**20)}
    assert c["resources"]["requests"] == c["resources"]["limits"]  # Guaranteed QoS
    assert c["command"] == ["/probes/syscall", "--op", "null"] and c["workingDir"] == "/work"
    assert c["securityContext"] == {"privileged": False, "allowPrivilegeEscalation": False}
    text = json.dumps(m)
    for never in (
        "hostNetwork",
        "hostPID",
        "hostIPC",
        "hostPath",
        'privileged": true',
        "capabilities",
        "volumes",
    ):
        assert never not in text
    assert spec["automountServiceAccountToken"] is False


def test_manifest_without_options_names_no_runtime_class_and_no_limits():
    m = pod_manifest(
        "p",
        namespace="n",
        labels={},
        image="i:t",
        argv=["/probes/hold"],
        workdir="/work",
        node="node-7",
    )
    assert "runtimeClassName" not in m["spec"] and m["spec"]["nodeName"] == "node-7"
    assert m["spec"]["containers"][0]["resources"] == {}
    m = pod_manifest(
        "p", namespace="n", labels={}, image="i:t", argv=["/probes/hold"], workdir="/work", cpus=2
    )
    assert m["spec"]["containers"][0]["resources"] == {
        "limits": {"cpu": "2000m"},
        "requests": {"cpu": "2000m"},
    }


def test_image_reference_gets_the_bundle_tag_unless_it_has_one():
    assert not has_tag("registry.example:5000/team/isobench-probes")
    assert has_tag("registry.example:5000/isobench-probes:v1") and has_tag("r/i@sha256:" + "a" * 64)
    assert image_for("reg:5000/isobench-probes", "abc") == "reg:5000/isobench-probes:abc"
    assert image_for("reg/isobench-probes:mine", "abc") == "reg/isobench-probes:mine"
    assert push_commands("abc", "reg/x") == [
        ["docker", "tag", "isobench-probes:abc", "reg/x:abc"],
        ["docker", "push", "reg/x:abc"],
    ]


def test_cluster_facts_from_nodes():
    def node(name, kernel):
        return {
            "metadata": {"name": name},
            "status": {
                "capacity": {"cpu": "4"},
                "nodeInfo": {
                    "kernelVersion": kernel,
                    "osImage": "Debian",
                    "containerRuntimeVersion": "containerd://1.7",
                    "kubeletVersion": "v1.30.1",
                    "architecture": "amd64",
                },
            },
        }

    same = cluster_facts({"gitVersion": "v1.30.1"}, [node("a", "6.1"), node("b", "6.1")])
    assert same["api_server"] == "v1.30.1" and same["kernel"] == "6.1" and same["cpu_count"] == "4"
    assert [n["name"] for n in same["nodes"]] == ["a", "b"]
    mixed = cluster_facts({"gitVersion": "v1.30.1"}, [node("a", "6.1"), node("b", "5.10")])
    assert mixed["kernel"] == "mixed: 5.10, 6.1"


@pytest.mark.parametrize(
    "config",
    [
        {"namespace": "Not_A_Label"},
        {"runtime_class": "gVisor!"},
        {"cpus": "abc"},
        {"cpus": "0"},
        {"memory": "lots"},
        {"image": "has space"},
        {"runtime": "runsc"},  # cri's option name, not k8s's
    ],
)
def test_bad_options_are_refused_with_a_sentence(config, tmp_path):
    with pytest.raises(OptionError, match=r"option|no option"):
        K8sEnv(config, Context("t", tmp_path, tmp_path))
    av = K8sEnv.probe(config)
    assert not av.ok and av.reason


def test_prepare_without_an_image_says_how_to_push_one(api, tmp_path):
    env = K8sEnv({"kubeconfig": str(api.kubeconfig)}, Context("t", tmp_path, tmp_path))
    with pytest.raises(OptionError) as e:
        env.prepare(BUNDLE)
    assert f"docker push REGISTRY/isobench-probes:{BUNDLE.hash}" in str(e.value)
    assert not [r for r in api.requests if r[0] == "POST"]  # nothing made


# ---------------------------------------------------------------- availability


def _one_line(reason: str) -> str:
    assert reason and "\n" not in reason
    return reason


def test_no_kubeconfig(tmp_path, monkeypatch):
    missing = tmp_path / "nope"
    assert _one_line(K8sEnv.probe({"kubeconfig": str(missing)}).reason).startswith(
        f"no kubeconfig at {missing}"
    )
    monkeypatch.setenv("KUBECONFIG", str(missing))
    assert f"no kubeconfig at {missing}" in K8sEnv.probe().reason
    assert K8sEnv.leftovers() == []  # nothing to look at
    assert K8sEnv.target() == "k8s:(no kubeconfig)"


def test_unreachable_context(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with StandIn() as api:
        text = api.kubeconfig_text("far").replace(api.url, f"http://127.0.0.1:{port}")
    path = tmp_path / "kubeconfig"
    path.write_text(text)
    av = K8sEnv.probe({"kubeconfig": str(path)})
    assert not av.ok and _one_line(av.reason).startswith("context far unreachable: ")
    with pytest.raises(Exception, match="unreachable|refused|Connection"):
        K8sEnv.leftovers({"kubeconfig": str(path)})  # clean says it could not look
    facts = K8sEnv.target_facts({"kubeconfig": str(path)})
    assert facts["context"] == "far" and "error" in facts


def test_unknown_context_and_missing_runtime_class(api):
    cfg = str(api.kubeconfig)
    av = K8sEnv.probe({"kubeconfig": cfg, "context": "prod"})
    assert not av.ok and "no context 'prod'" in _one_line(av.reason)
    av = K8sEnv.probe({"kubeconfig": cfg, "runtime_class": "kata"})
    assert (
        not av.ok
        and _one_line(av.reason) == "RuntimeClass kata not found (the cluster has: gvisor)"
    )
    assert K8sEnv.probe({"kubeconfig": cfg, "runtime_class": "gvisor"}).ok
    with StandIn(runtime_classes=()) as bare:
        av = K8sEnv.probe({"kubeconfig": str(bare.kubeconfig), "runtime_class": "gvisor"})
        assert av.reason == "RuntimeClass gvisor not found (the cluster has none)"


def test_forbidden_namespace():
    with StandIn(forbidden_namespaces=("secret",)) as api:
        av = K8sEnv.probe({"kubeconfig": str(api.kubeconfig), "namespace": "secret"})
        assert not av.ok and _one_line(av.reason).startswith("namespace secret forbidden: ")
        assert K8sEnv.probe({"kubeconfig": str(api.kubeconfig), "namespace": "other"}).ok


def test_available_says_it_is_untested_and_names_the_api_server(api):
    av = K8sEnv.probe({"kubeconfig": str(api.kubeconfig)})
    assert av.ok and av.versions == {"kubernetes": "v1.30.0+isobench-standin"}
    assert "never against a real cluster" in _one_line(av.reason)
    assert K8sEnv.target({"kubeconfig": str(api.kubeconfig)}) == "k8s:standin"
    facts = K8sEnv.target_facts({"kubeconfig": str(api.kubeconfig)})
    assert facts["api_server"] == "v1.30.0+isobench-standin"
    assert facts["nodes"][0]["container_runtime"] == "standin://0"
    rows = dict(K8sEnv.details())
    assert "never against a real cluster" in rows["k8s (real cluster)"].reason


# ---------------------------------------------------------------- launches


def _assert_watch_timings(launch, t_submit: int, seen: dict[str, int]) -> None:
    """Every phase is this host's monotonic time of the event's arrival: after the
    stand-in made the transition, within a moment of it, in order, sub-second."""
    phases = launch.phases
    order = ["created", "scheduled", "started", "ready", "exit", "cleaned"]
    assert [p for p in order if p in phases] == order, phases
    values = [phases[p] for p in order]
    assert values == sorted(values) and values[0] > 0
    for phase, server in (
        ("scheduled", "scheduled"),
        ("started", "started"),
        ("ready", "ready"),
        ("exit", "exit"),
        ("cleaned", "deleted"),
    ):
        lag = t_submit + phases[phase] - seen[server]
        assert 0 <= lag < 500_000_000, (phase, lag)  # not the API's 1 s timestamps
    assert phases["scheduled"] - phases["created"] < 1_000_000_000


def test_run_to_completion_reads_the_probe_output_from_the_log(api, make_env):
    line = {
        "probe": "syscall",
        "op": "null",
        "iterations": 10,
        "elapsed_ns": 20,
        "metrics": {"ns_per_op": 2.0},
        "units": {"ns_per_op": "ns"},
        "checksum": 0,
        "note": "written by this test into the stand-in's log: not a measurement",
    }
    api.outputs["syscall"] = [json.dumps(line), "not json"]
    env = make_env(api)
    inst = env.start(SYSCALL, timeout=20)
    launch = inst.wait()
    assert launch.status == "ok", launch.reason
    assert launch.exit_code == 0 and launch.records == [line]
    assert launch.stray_lines == ["not json"]
    assert launch.extra["node"] == "standin-node-1"
    _assert_watch_timings(launch, inst.t_submit, api.transitions[launch.extra["name"]])
    assert _pods(api) == []
    # the pod it sent
    (post,) = [r for r in api.requests if r[0] == "POST" and r[1].endswith("/pods")]
    assert post[1] == "/api/v1/namespaces/isobench/pods"


def test_the_stand_in_reports_no_measurement_by_default(api, make_env):
    env = make_env(api)
    launch = env.launch(SYSCALL, timeout=20)
    assert launch.status == "ok" and launch.records == []
    assert launch.probe_errors == ["syscall/null: the k8s stand-in ran nothing: no measurement"]
    startup = env.launch(STARTUP, timeout=20)
    assert startup.status == "ok" and startup.records == [] and "ready" in startup.phases


def test_a_serving_pod_keeps_stdin_open_without_a_tty():
    args = dict(namespace="n", labels={}, image="i:t", workdir="/work")
    (c,) = pod_manifest("p", argv=["/probes/syscall", "--serve"], stdin=True, **args)["spec"][
        "containers"
    ]
    assert c["stdin"] is True and c["stdinOnce"] is False and c["tty"] is False
    (c,) = pod_manifest("p", argv=["/probes/hold"], **args)["spec"]["containers"]
    assert "stdin" not in c and "tty" not in c


def test_an_error_answer_brings_its_stderr_echo_along():
    error = '{"probe":"syscall","op":"x","error":"unknown op","burst":2}'
    assert with_echoes(['{"op":"null"}', error]) == [
        '{"op":"null"}',
        error,
        "syscall: x: unknown op",
    ]


def test_a_served_probe_answers_over_the_attach_stream(api, env_factory, bundle):
    """Serve mode through pods/attach as the official client opens it (the stand-in runs
    the serving probe locally: its answers are real, the pod is not): answers in order,
    the answers in the pod log are no records, a probe that quits ends the channel, a
    pod that does not serve has none, and an attach the server refuses is one line."""
    env = env_factory(K8sEnv, {"kubeconfig": str(api.kubeconfig), "image": IMAGE})
    inst = env.start(served("syscall", "syscall"), timeout=30)
    assert inst.wait_ready()
    first = json.loads(inst.ask("null iters=100", 10))
    assert first["op"] == "null" and first["burst"] == 1 and first["iterations"] == 100
    second = json.loads(inst.ask("nope", 10))
    assert second["op"] == "nope" and "error" in second and second["burst"] == 2
    (attach,) = [q for m, p, q in api.requests if p.endswith(f"/pods/{inst.name}/attach")]
    flags = {k: str(attach.get(k)).lower() for k in ("stdin", "stdout", "tty")}
    assert flags == {"stdin": "true", "stdout": "true", "tty": "false"}  # the client says True
    assert attach["container"] == "probe"
    with pytest.raises(ChannelError):
        inst.ask("quit", 10)  # no answer: the probe exits 0
    launch = inst.stop()
    assert launch.status == "ok" and launch.exit_code == 0, launch
    assert launch.records == [] and launch.probe_errors == [] and launch.stray_lines == []
    with pytest.raises(ChannelError, match="ended"):
        inst.ask("null iters=1", 5)
    held = env.start(HOLD, timeout=30)
    assert held.wait_ready()
    with pytest.raises(ChannelError, match="not serving"):
        held.ask("null iters=1", 5)
    with pytest.raises(ChannelError) as refused:
        env._client.attach(held.name, "isobench", "probe", 5)
    assert str(refused.value) == (
        f"pod {held.name}: attach stream: ATTACH pod: 400 Bad Request: "
        f'container "probe" in pod "{held.name}" has no stdin to attach'
    )
    assert held.stop().status == "ok"
    env.cleanup()
    assert _pods(api) == [] and api.children == {}


def test_held_instance_is_stopped_by_a_graceful_delete(api, make_env):
    env = make_env(api, runtime_class="gvisor", cpus=0.5, memory="256m")
    inst = env.start(HOLD, timeout=20)
    assert inst.wait_ready()
    (name,) = [p.split("/")[1] for p in _pods(api)]
    pod = api.pods[("isobench", name)]
    assert pod["spec"]["runtimeClassName"] == "gvisor"
    assert pod["metadata"]["labels"] == {
        "isobench": "1",
        "isobench.run": env.ctx.run_id,
        "isobench.env": env.ctx.prefix,
    }
    assert pod["status"]["phase"] == "Running"
    launch = inst.stop()
    assert launch.status == "ok" and launch.exit_code == 0
    deletes = [q for m, p, q in api.requests if m == "DELETE" and p.endswith(f"/pods/{name}")]
    assert deletes and int(deletes[0]["gracePeriodSeconds"]) >= 1  # SIGTERM, not a force
    assert launch.phases["ready"] < launch.phases["stop"] < launch.phases["exit"]
    assert launch.phases["exit"] < launch.phases["cleaned"]
    _assert_watch_timings(launch, inst.t_submit, api.transitions[name])
    assert _pods(api) == []


def test_several_held_instances_share_one_watch(api, make_env):
    env = make_env(api)
    held = [env.start(HOLD, timeout=20) for _ in range(4)]
    assert all(i.wait_ready() for i in held)
    assert len(_pods(api)) == 4
    assert all(i.stop().status == "ok" for i in held)
    watches = [
        r for r in api.requests if r[0] == "GET" and str(r[2].get("watch")).lower() == "true"
    ]
    assert len(watches) == 1
    assert _pods(api) == []


def test_a_probe_that_cannot_start_fails_with_its_exit_code(api, make_env):
    env = make_env(api)
    launch = env.launch(Invocation("x", "nosuch"), timeout=20)
    assert launch.status == "failed" and launch.exit_code == 128
    assert "status 128 before `ready`" in launch.reason and "no such file" in launch.stderr_tail
    assert launch.extra["k8s_reason"] == "StartError"
    assert _pods(api) == []


@pytest.mark.parametrize(
    "failure, deleted",
    [
        (K8sError("CREATE pod", "forbidden", 403), False),  # refused: nothing was made
        (K8sError("CREATE pod", "timed out"), True),  # no answer: it may have been made
        (Interrupted(signal.SIGINT), True),  # Ctrl-C during the call: likewise
    ],
)
def test_a_failed_pod_creation_deletes_the_pod_unless_the_api_refused_it(
    api, make_env, monkeypatch, failure, deleted
):
    env = make_env(api)
    client, calls = env._client, []
    real = client.call

    def call(name, method, *args, **kwargs):
        calls.append(name)
        if name == "CREATE pod":
            raise failure
        return real(name, method, *args, **kwargs)

    monkeypatch.setattr(client, "call", call)
    with pytest.raises(StartError if isinstance(failure, K8sError) else Interrupted) as info:
        env.start(HOLD, timeout=20)
    assert calls == (["CREATE pod", "DELETE pod"] if deleted else ["CREATE pod"])
    if isinstance(failure, K8sError):
        assert str(failure) in str(info.value)
    assert _pods(api) == []


def test_a_probe_that_fails_after_ready_keeps_its_exit_code(api, make_env):
    env = make_env(api)
    launch = env.launch(Invocation("startup", "startup", ("--no-such-flag",)), timeout=20)
    assert launch.status == "failed" and launch.exit_code == 2
    assert launch.reason.startswith("exited with status 2") and "ready" in launch.phases
    assert launch.stray_lines == ["startup: takes no arguments"]  # the log mixes both
    assert _pods(api) == []


def test_an_image_that_cannot_be_pulled_times_out_and_is_removed(make_env):
    with StandIn(pull_fails={f"{IMAGE}:{BUNDLE.hash}"}) as api:
        env = make_env(api)
        launch = env.launch(SYSCALL, timeout=1.0)
        assert launch.status == "timeout"
        assert "no `ready` within 1 s" in launch.reason and "ImagePullBackOff" in launch.reason
        assert "started" not in launch.phases and "cleaned" in launch.phases
        assert _pods(api) == []
        env.cleanup()


def test_an_aborted_instance_leaves_nothing(api, make_env):
    env = make_env(api)
    inst = env.start(HOLD, timeout=20)
    assert inst.wait_ready()
    inst.abort()  # what Ctrl-C and a failed run do
    assert inst.launch.status == "failed" and _pods(api) == []


def test_describe_records_the_api_server_version(api, make_env):
    info = make_env(api, runtime_class="gvisor").describe()
    assert info["api_server"] == "v1.30.0+isobench-standin"
    assert info["target"] == "k8s:standin" and info["context"] == "standin"
    assert info["image"] == f"{IMAGE}:{BUNDLE.hash}" and info["image_is_bundle_tag"]
    assert info["runtime_class"] == "gvisor" and "never against a real cluster" in info["tested"]


# ---------------------------------------------------------------- cleanup and leftovers


def test_cleanup_removes_held_pods_and_the_namespace_it_made(api, make_env):
    env = make_env(api)
    assert "isobench" in api.namespaces
    assert api.namespaces["isobench"]["metadata"]["labels"]["isobench"] == "1"
    inst = env.start(HOLD, timeout=20)
    assert inst.wait_ready()
    env.cleanup()
    assert inst.launch is not None and _pods(api) == []
    assert "isobench" not in api.namespaces


def test_a_namespace_it_did_not_make_is_kept(api, make_env):
    env = make_env(api, namespace="default")
    assert env.launch(STARTUP, timeout=20).status == "ok"
    env.cleanup()
    assert "default" in api.namespaces


def test_leftovers_are_the_labelled_objects_and_clean_removes_them(api, tmp_path):
    opts = {"kubeconfig": str(api.kubeconfig), "image": IMAGE}
    env = K8sEnv(opts, Context("crashed", tmp_path, tmp_path, prefix="isobench-crashed-e0"))
    env.prepare(BUNDLE)
    try:
        inst = env.start(HOLD, timeout=20)
        assert inst.wait_ready()
        env._watcher.stop()  # the run "crashes": its pod and namespace stay
        api.create_pod(
            "default",
            {
                "metadata": {"name": "someone-elses", "labels": {}},
                "spec": {"containers": [{"name": "c", "image": "i", "command": ["/probes/hold"]}]},
            },
        )
        found = K8sEnv.leftovers(opts)
        assert sorted(item.what for item in found) == [
            "k8s namespace isobench at k8s:standin (made by isobench-crashed-e0)",
            "k8s pod isobench/isobench-crashed-e0-1 at k8s:standin",
        ]
        for item in found:
            item.remove()
        deadline = time.monotonic() + 5
        while ("isobench" in api.namespaces or _pods(api) != ["default/someone-elses"]) and (
            time.monotonic() < deadline
        ):
            time.sleep(0.02)
        assert "isobench" not in api.namespaces
        assert _pods(api) == ["default/someone-elses"]  # unlabelled: not isobench's
        assert K8sEnv.leftovers(opts) == []
    finally:
        env._client.close()
        api.delete_pod("default", "someone-elses", 0)


def test_leftovers_fall_back_to_the_namespace_without_cluster_wide_list(tmp_path, make_env):
    with StandIn(cluster_list=False) as api:
        env = make_env(api)
        inst = env.start(HOLD, timeout=20)
        assert inst.wait_ready()
        found = K8sEnv.leftovers({"kubeconfig": str(api.kubeconfig)})
        assert any(item.what.startswith("k8s pod isobench/") for item in found)
        env.cleanup()


# ---------------------------------------------------------------- the stand-in itself


def test_stand_in_leaves_nothing_also_when_interrupted():
    with pytest.raises(KeyboardInterrupt), StandIn() as api:
        config_dir = Path(api.kubeconfig).parent
        url = api.url
        raise KeyboardInterrupt
    assert not config_dir.exists()
    with (
        pytest.raises(OSError),
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), 1),
    ):
        pass


def test_stand_in_timestamps_have_the_apis_one_second_resolution(api, make_env):
    env = make_env(api)
    inst = env.start(HOLD, timeout=20)
    assert inst.wait_ready()
    pod = next(iter(api.pods.values()))
    started = pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"]
    for stamp in (pod["metadata"]["creationTimestamp"], started):
        assert "." not in stamp and stamp.endswith("Z")  # what a client must not time with
    inst.stop()
