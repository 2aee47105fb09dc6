"""Environments that run from an isobench rootfs (`rootfs=NAME`, issue 16): one real
minbase tree built once per session (in a private cache, with a marker directory copied
in), the probes run chrooted into it on host and namespaces, as the root of a docker
image on docker; each checks the probe ran inside the tree, that nothing is left (mounts,
scratch, cgroups, containers, images) and that the manifest records the tree's key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import catalog
from bench.envs import image as img
from bench.envs import roots
from bench.envs.base import HOLD, Context, Invocation, OptionError
from bench.envs.docker import DockerEnv
from bench.envs.host import HostEnv
from bench.envs.namespaces import NamespacesEnv
from bench.matrix import MatrixError, parse_env_spec
from bench.metrics.cgroup import find_leftovers
from tests.conftest import MARKER, MARKER_DIR, MARKER_ROOTFS, isobench

NAME = MARKER_ROOTFS  # conftest's tree
LOCAL = [HostEnv, NamespacesEnv]


@pytest.fixture(scope="session")
def tree(marker_rootfs):
    """The minbase rootfs with a marker directory (conftest), in a cache of its own."""
    return marker_rootfs


@pytest.fixture
def ctx(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("ISOBENCH_CACHE", str(tree.root.parent.parent))  # where names resolve
    return Context(f"t{os.getpid()}", tmp_path / "scratch", tree.root.parent.parent)


def _mounts_of(*paths: Path) -> list[str]:
    """Lines of this (the host's) mount table that name any of `paths`."""
    text = Path("/proc/self/mountinfo").read_text()
    return [ln for ln in text.splitlines() if any(str(p) in ln for p in paths)]


def _left(ctx: Context) -> list[str]:
    cgroups = [str(p) for p in find_leftovers() if ctx.run_id in p.name]
    files = [str(p) for p in ctx.scratch.iterdir()] if ctx.scratch.is_dir() else []
    return cgroups + files + _mounts_of(ctx.scratch)


# ---------------------------------------------------------------- the option


def test_the_option_names_a_rootfs_that_exists(tree, monkeypatch, tmp_path):
    monkeypatch.setenv("ISOBENCH_CACHE", str(tree.root.parent.parent))
    spec = parse_env_spec(f"host:rootfs={NAME}")
    assert spec.options["rootfs"] == NAME and spec.spec == f"host:rootfs={NAME}"
    for kind in ("host", "namespaces", "docker"):
        with pytest.raises(MatrixError, match="no rootfs named nope"):
            parse_env_spec(f"{kind}:rootfs=nope")
    with pytest.raises(OptionError, match="rootfs name"):
        HostEnv({"rootfs": "Bad/Name"}, Context("t", tmp_path, tmp_path))
    assert HostEnv.parse({})["rootfs"] is None  # the kind's own root by default


def test_unknown_rootfs_is_one_line_and_exit_2(tree, tmp_path):
    res = isobench(
        "run",
        "--env",
        "host:rootfs=nope",
        "--quick",
        "--rounds",
        "1",
        "--results",
        str(tmp_path / "r"),
        cache=tree.root.parent.parent,
        cwd=tmp_path,
        timeout=120,
    )
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("isobench: error:") and "no rootfs named nope" in line
    assert not (tmp_path / "r").exists() or not list((tmp_path / "r").iterdir())


# ---------------------------------------------------------------- host and namespaces


@pytest.mark.requires("host", "namespaces")
@pytest.mark.parametrize("cls", LOCAL)
def test_probes_run_inside_the_tree(cls, ctx, bundle, tree):
    """The marker directory exists only in the tree: io in it works from the rootfs and
    fails without; every syscall op and startup run; the tree is not written to."""
    before = sorted(p.name for p in tree.tree.iterdir())
    env = cls({"rootfs": NAME}, ctx)
    bare = cls({}, ctx)
    try:
        env.prepare(bundle)
        bare.prepare(bundle)
        in_marker = Invocation("io", "io", ("--dir", MARKER_DIR, "--op", "create_unlink"))
        inside = env.launch(in_marker, timeout=60)
        assert inside.status == "ok", (inside.reason, inside.stderr_tail)
        assert [r["op"] for r in inside.records] == ["create_unlink"]
        outside = bare.launch(in_marker, timeout=60)
        assert outside.status == "failed"  # the host has no such directory
        for workload in ("syscall", "startup", "io"):
            inv = catalog.load()[workload].invocation(quick=True, emulated=False)
            launch = env.launch(inv, timeout=60)
            assert launch.status == "ok", (workload, launch.reason, launch.stderr_tail)
            assert 0 < launch.phases["ready"] <= launch.phases["exit"]
        described = env.describe()["rootfs"]
        assert described["key"] == tree.key and described["name"] == NAME
        assert described["package_count"] == len(tree.record["packages"]) > 10
        assert described["size_bytes"] == tree.record["size"]["allocated"] > 0
        assert bare.describe()["rootfs"] is None
    finally:
        env.cleanup()
        bare.cleanup()
    assert _left(ctx) == []
    assert sorted(p.name for p in tree.tree.iterdir()) == before  # no /isobench made in it
    assert [p.name for p in (tree.tree / MARKER_DIR.lstrip("/")).iterdir()] == ["marker.txt"]


@pytest.mark.requires("host")
def test_held_probe_sees_the_tree_and_its_mounts_are_private(ctx, bundle, tree):
    env = HostEnv({"rootfs": NAME}, ctx)
    env.prepare(bundle)
    try:
        held = env.start(HOLD, timeout=60)
        assert held.wait_ready(30)
        pid = held.child.proc.pid  # attach exec'd the probe: the same pid
        proc_root = Path(f"/proc/{pid}/root")
        assert (proc_root / MARKER_DIR.lstrip("/") / "marker.txt").read_text() == MARKER
        assert (proc_root / "etc/debian_version").read_text() == (
            tree.tree / "etc/debian_version"
        ).read_text()
        assert os.readlink(f"/proc/{pid}/exe").endswith(roots.probe_path("hold"))
        assert _mounts_of(tree.tree, ctx.scratch) == []  # none in the host's namespace
        launch = held.stop()
        assert launch.status == "ok", launch.reason
    finally:
        env.cleanup()
    assert _left(ctx) == []


@pytest.mark.requires("host", "namespaces")
@pytest.mark.parametrize("cls", LOCAL)
def test_instances_still_held_at_cleanup_leave_nothing(cls, ctx, bundle, tree):
    """The run ends while instances are held (Ctrl-C, a failure): cleanup kills them and
    removes their overlays' directories; no mount of them ever reached the host."""
    env = cls({"rootfs": NAME}, ctx)
    env.prepare(bundle)
    try:
        held = [env.start(HOLD, timeout=60) for _ in range(2)]
        assert all(h.wait_ready(30) for h in held)
        assert len(list(ctx.scratch.glob("*.root"))) == 2
    finally:
        env.cleanup()
    assert all(h.launch is not None for h in held)
    assert _left(ctx) == [] and _mounts_of(tree.tree) == []


@pytest.mark.requires("host")
def test_timeout_kills_and_leaves_nothing(ctx, bundle):
    env = HostEnv({"rootfs": NAME}, ctx)
    env.prepare(bundle)
    inv = Invocation("syscall", "syscall", ("--op", "null", "--min-ms", "60000"))
    launch = env.launch(inv, timeout=1.5)
    env.cleanup()
    assert launch.status == "timeout", launch.reason
    assert _left(ctx) == []
    out = subprocess.run(["pgrep", "-f", "--min-ms 60000"], capture_output=True, text=True)
    assert out.stdout.strip() == ""


@pytest.mark.requires("host", "namespaces", "docker")
def test_quick_run_records_the_tree_in_the_manifest(tree, tmp_path, tree_images):
    envs = [f"host:rootfs={NAME}", f"namespaces:rootfs={NAME}", f"docker:rootfs={NAME}"]
    res = isobench(
        "run",
        *(a for e in envs for a in ("--env", e)),
        "--workload",
        "syscall",
        "--workload",
        "startup",
        "--quick",
        "--rounds",
        "1",
        "--max-rounds",
        "1",
        "--results",
        str(tmp_path / "r"),
        cache=tree.root.parent.parent,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    (run,) = (tmp_path / "r").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    for spec in envs:
        env = manifest["environments"][spec]
        assert env["available"], env["reason"]
        assert env["rootfs"]["key"] == tree.key and env["rootfs"]["packages"]
        assert env["options"]["rootfs"] == NAME
    samples = [json.loads(ln) for ln in (run / "samples.jsonl").read_text().splitlines()]
    ran = {(s["env"], s["workload"]) for s in samples if s["status"] == "ok"}
    assert {(e, w) for e in envs for w in ("syscall", "startup")} <= ran, sorted(ran)
    assert _mounts_of(tree.tree) == []
    assert not [p for p in find_leftovers() if manifest["run_id"] in p.name]
    assert _containers(manifest["run_id"]) == ""
    assert len(_images_of(tree.key)) == 1  # the cached one, reused across runs


HOLDER = """
import sys, time
from pathlib import Path
from bench import bundle
from bench.envs.base import HOLD, Context
from bench.envs.host import HostEnv
from bench.scratch import new_scratch
run_id, cache, bundle_root, name = sys.argv[1:]
ctx = Context(run_id, new_scratch(run_id), Path(cache))
env = HostEnv({"rootfs": name}, ctx)
env.prepare(bundle.load(Path(bundle_root)))
held = env.start(HOLD, 120)
assert held.wait_ready(60)
print(held.child.proc.pid, ctx.scratch, flush=True)
time.sleep(600)
"""


@pytest.mark.requires("host")
def test_kill_9_leaves_only_what_clean_finds_and_removes(tree, bundle, tmp_path):
    """The harness killed with -9 while a probe runs from the tree: the probe and its
    cgroup live on, its mounts stay private to it; what `clean` finds of the run (its
    cgroup, its scratch with the overlay's directories) removes it all."""
    from bench.clean import find_all

    run_id = f"k9{os.getpid()}"
    cache = tree.root.parent.parent
    env = {**os.environ, "ISOBENCH_CACHE": str(cache), "PYTHONPATH": str(Path(__file__).parents[1])}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, run_id, str(cache), str(bundle.root), NAME],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        pid, scratch = holder.stdout.readline().split()
    finally:
        holder.kill()
        holder.wait()
    try:
        probe_root = Path(f"/proc/{pid}/root")
        assert (probe_root / MARKER_DIR.lstrip("/") / "marker.txt").read_text() == MARKER
        assert _mounts_of(tree.tree, Path(scratch)) == []
        items = [item for item in find_all() if run_id in item.what]
        assert {item.what.split()[0] for item in items} == {"cgroup", "scratch"}
    finally:  # as `clean` does, in find_all's order: the cgroup (its processes) first
        for item in [item for item in find_all() if run_id in item.what]:
            item.remove()
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()
    assert not Path(scratch).exists()
    assert not [item for item in find_all() if run_id in item.what]


# ---------------------------------------------------------------- docker


def _containers(run_id: str) -> str:
    return subprocess.run(
        ["docker", "ps", "-a", "-q", "--filter", f"label=isobench.run={run_id}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()


def _images_of(key: str) -> list[str]:
    out = subprocess.run(
        ["docker", "images", "-q", "--no-trunc", "--filter", f"label={img.ROOTFS_LABEL}={key}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return sorted(set(out))


@pytest.fixture(scope="session")
def tree_images(tree):
    """The docker images made from the session's tree: removed at the end (the tree goes
    with its private cache, so they would otherwise be leftovers of `clean`)."""
    yield
    for image in _images_of(tree.key):
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True, timeout=120)


@pytest.mark.requires("docker")
def test_docker_runs_from_the_tree_and_reuses_its_image(ctx, bundle, tree, tree_images):
    env = DockerEnv({"rootfs": NAME}, ctx)
    bare = DockerEnv({}, ctx.for_env(2))
    try:
        env.prepare(bundle)
        bare.prepare(bundle)
        in_marker = Invocation("io", "io", ("--dir", MARKER_DIR, "--op", "create_unlink"))
        inside = env.launch(in_marker, timeout=60)
        assert inside.status == "ok", (inside.reason, inside.stderr_tail)
        assert bare.launch(in_marker, timeout=60).status == "failed"  # not in the probe image
        for workload in ("syscall", "startup", "io"):
            inv = catalog.load()[workload].invocation(quick=True, emulated=False)
            launch = env.launch(inv, timeout=60)
            assert launch.status == "ok", (workload, launch.reason, launch.stderr_tail)
        described = env.describe()
        assert described["rootfs"]["key"] == tree.key
        assert described["image"]["tag"] == img.rootfs_image_tag(tree.key, bundle.hash)
        image = env.cl.images.get(described["image"]["id"])
        assert image.labels[img.ROOTFS_LABEL] == tree.key
        assert image.labels[img.BUNDLE_LABEL] == bundle.hash
        again = DockerEnv({"rootfs": NAME}, ctx.for_env(3))
        again.prepare(bundle)  # present: reused, not imported again
        assert again.describe()["image"]["id"] == described["image"]["id"]
        again.cleanup()
    finally:
        env.cleanup()
        bare.cleanup()
    assert _images_of(tree.key) == [described["image"]["id"]]
    assert _containers(ctx.run_id) == ""
    assert [p.name for p in (tree.tree / MARKER_DIR.lstrip("/")).iterdir()] == ["marker.txt"]


def test_rootfs_image_stream_is_the_tree_then_the_probes(tree, bundle):
    import io
    import tarfile

    data = b"".join(img.rootfs_image_stream(tree, bundle, chunk=1 << 16))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
        probe = tar.extractfile(f".{roots.probe_path('syscall')}").read()
    assert f".{MARKER_DIR}/marker.txt" in names and "./etc/debian_version" in names
    assert probe == bundle.probes["syscall"].read_bytes()
    assert f".{roots.WORKDIR}" in names


@pytest.mark.requires("docker")
def test_clean_finds_an_image_whose_rootfs_is_gone(
    ctx, bundle, tree, tree_images, tmp_path, monkeypatch
):
    env = DockerEnv({"rootfs": NAME}, ctx)
    try:
        env.prepare(bundle)
    finally:
        env.cleanup()
    mine = [i for i in DockerEnv.leftovers() if tree.key in i.what]
    assert mine == []  # its rootfs is in the cache: kept
    elsewhere = tmp_path / "elsewhere"  # a cache with the bundle but not the rootfs
    (elsewhere / "bundles" / bundle.hash).mkdir(parents=True)
    monkeypatch.setenv("ISOBENCH_CACHE", str(elsewhere))
    (gone,) = [i for i in DockerEnv.leftovers() if tree.key in i.what]
    assert f"rootfs {tree.key} no longer in the cache" in gone.what
    gone.remove()
    assert _images_of(tree.key) == []
