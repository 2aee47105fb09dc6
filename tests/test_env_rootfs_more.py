"""podman, oci and cri from an isobench rootfs (`rootfs=NAME`, issue 16): one real minbase
tree built once for this module (in a private cache, with a marker directory copied in)
runs the probes as the root of a podman image, of an oci bundle (runc, runsc where it
works) and of a cri pod's container image. Each checks that the probe ran inside the tree
(io in a directory only the tree has), that the manifest's description records the tree,
that nothing is left (containers, mounts, pods, images where they should not stay) and
that the cached tree was never written."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from bench import catalog
from bench.clean import still_in_use
from bench.envs import cri_images as ci
from bench.envs import image as img
from bench.envs import roots
from bench.envs.base import HOLD, Context, Invocation, OptionError
from bench.envs.cri import CriEnv
from bench.envs.oci import OVERLAY, ROOTFS, OciEnv, overlay_leftovers, runtime_argv
from bench.envs.podman import PodmanEnv, image_leftover_reason
from bench.matrix import MatrixError, parse_env_spec
from bench.metrics.cgroup import find_leftovers
from bench.scratch import new_scratch
from tests.conftest import MARKER, MARKER_DIR, MARKER_ROOTFS, missing

NAME = MARKER_ROOTFS  # conftest's tree
KINDS = (PodmanEnv, OciEnv, CriEnv)
IN_MARKER = Invocation("io", "io", ("--dir", MARKER_DIR, "--op", "create_unlink"))


@pytest.fixture(scope="module")
def tree(marker_rootfs):
    """The minbase rootfs with a marker directory (conftest), in a cache of its own."""
    return marker_rootfs


@pytest.fixture
def ctx(tree, tmp_path, monkeypatch):
    monkeypatch.setenv("ISOBENCH_CACHE", str(tree.root.parent.parent))  # where names resolve
    return Context(f"tm{os.getpid()}", tmp_path / "scratch", tree.root.parent.parent)


def _untouched(tree) -> tuple:
    """What a write into the cached tree would change: its top level (no /isobench made
    in it) and the marker directory's entries and mtime (io ran there)."""
    marker = tree.tree / MARKER_DIR.lstrip("/")
    return (
        sorted(p.name for p in tree.tree.iterdir()),
        sorted(p.name for p in marker.iterdir()),
        marker.stat().st_mtime_ns,
    )


def _runs_inside(env, bare, workloads=("syscall", "startup", "io")) -> None:
    """io in the marker directory works from the tree and fails from the probes' image;
    the workloads (io: in the rootfs's io directory) run."""
    inside = env.launch(IN_MARKER, timeout=60)
    assert inside.status == "ok", (inside.reason, inside.stderr_tail)
    assert [r["op"] for r in inside.records] == ["create_unlink"]
    if bare is not None:
        assert bare.launch(IN_MARKER, timeout=60).status == "failed"  # no such directory
    for workload in workloads:
        inv = catalog.load()[workload].invocation(quick=True, emulated=False)
        launch = env.launch(inv, timeout=60)
        assert launch.status == "ok", (workload, launch.reason, launch.stderr_tail)
        assert launch.phases["ready"] > 0


def _described(env, tree) -> dict:
    described = env.describe()
    r = described["rootfs"]
    assert r["key"] == tree.key and r["name"] == NAME
    assert r["package_count"] == len(tree.record["packages"]) > 10
    assert r["size_bytes"] == tree.record["size"]["allocated"] > 0
    return described


# ---------------------------------------------------------------- options (no tree)


def test_every_container_kind_takes_the_rootfs_option(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOBENCH_CACHE", str(tmp_path))  # an empty cache: no rootfs
    for cls in KINDS:
        assert cls.options["rootfs"] is roots.ROOTFS_OPTION
        assert cls.parse({})["rootfs"] is None  # the kind's own image by default
        with pytest.raises(MatrixError, match="no rootfs named nope"):
            parse_env_spec(f"{cls.kind}:rootfs=nope")
        with pytest.raises(OptionError, match="rootfs name"):
            cls({"rootfs": "Bad/Name"}, Context("t", tmp_path, tmp_path))


def test_clean_keeps_a_podman_image_while_its_bundle_and_rootfs_are_cached(tmp_path):
    bundles, trees = tmp_path / "bundles", tmp_path / "rootfs"
    (bundles / "b1").mkdir(parents=True)
    (trees / "k1").mkdir(parents=True)
    labels = img.rootfs_image_labels("k1", "b1")
    assert image_leftover_reason(labels, bundles, trees) == ""
    assert image_leftover_reason(img.image_labels("b1"), bundles, trees) == ""
    gone = image_leftover_reason(img.rootfs_image_labels("k2", "b1"), bundles, trees)
    assert gone == "rootfs k2 no longer in the cache"
    gone = image_leftover_reason(img.image_labels("b2"), bundles, trees)
    assert gone == "bundle b2 no longer in the cache"
    assert image_leftover_reason({"isobench": "1"}, bundles, trees) == ""  # a check image


def test_a_streamed_oci_archive_is_the_written_one(tmp_path):
    """The rootfs image's archive is streamed into ctr: the same bytes as the archive
    written to a file (up to tarfile's record padding), and a layer that changes while
    it streams is refused."""
    layer = tmp_path / "layer.tar"
    layer.write_bytes(os.urandom(5000))
    config = ci.rootfs_config("k1", "b1")
    written = ci.write_archive(tmp_path / "a.tar", "isobench.local/rootfs:k1-b1", layer, config)
    digest, size = img.stream_digest([layer.read_bytes()])
    chunks = lambda: iter([layer.read_bytes()[:1000], layer.read_bytes()[1000:]])  # noqa: E731
    streamed = b"".join(
        ci.archive_stream(
            "isobench.local/rootfs:k1-b1", chunks, digest, size, ci.rootfs_config("k1", "b1")
        )
    )
    data = written.read_bytes()
    assert data.startswith(streamed) and not data[len(streamed) :].strip(b"\0")
    with tarfile.open(fileobj=io.BytesIO(streamed)) as tar:
        index = json.load(tar.extractfile("index.json"))
        (manifest,) = index["manifests"]
        assert manifest["annotations"]["io.containerd.image.name"].endswith(":k1-b1")
        blob = tar.extractfile("blobs/sha256/" + digest.split(":")[1]).read()
        assert blob == layer.read_bytes()
    assert config["config"]["WorkingDir"] == roots.WORKDIR
    assert config["config"]["Labels"][img.ROOTFS_LABEL] == "k1"
    changed = lambda: iter([b"x" * size])  # noqa: E731
    with pytest.raises(RuntimeError, match="changed"):
        b"".join(ci.archive_stream("r:t", changed, digest, size, ci.rootfs_config("k", "b")))


FEEDER = """
import sys, time
from bench.envs import image as img
def chunks():
    yield b"half a tree"
    print("fed", flush=True)
    time.sleep(600)
img.feed(["sh", "-c", "cat >/dev/null; touch " + sys.argv[1]], chunks(), 600)
"""


def test_a_half_fed_import_never_sees_the_end_of_its_input(tmp_path):
    """What an import is fed: a stream that fails, a command past its deadline, a harness
    killed with -9: the command dies before its input ends (an importer would take a
    tar cut between two members for a whole one)."""
    mark = tmp_path / "ended"
    script = ["sh", "-c", f"cat >/dev/null; touch {mark}"]

    def failing():
        yield b"x" * 100
        raise ValueError("the tree went away")

    with pytest.raises(ValueError, match="went away"):
        img.feed(script, failing(), 30)
    with pytest.raises(TimeoutError, match="took over 0.2 s"):
        img.feed(["sleep", "30"], iter([]), 0.2)
    code, err = img.feed(["sh", "-c", "cat >/dev/null; echo no >&2; exit 3"], iter([b"a"]), 30)
    assert (code, err) == (3, "no\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    harness = subprocess.Popen(
        [sys.executable, "-c", FEEDER, str(mark)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert harness.stdout.readline() == "fed\n"
    finally:
        harness.kill()
        harness.wait()
        harness.stdout.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _pgrep(str(mark)):
        time.sleep(0.05)
    assert _pgrep(str(mark)) == "" and not mark.exists()


def _pgrep(pattern: str) -> str:
    return subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout


# ---------------------------------------------------------------- podman


def _podman_images(key: str) -> list[str]:
    out = subprocess.run(
        ["podman", "images", "-q", "--no-trunc", "--filter", f"label={img.ROOTFS_LABEL}={key}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.split()
    return sorted({i.removeprefix("sha256:") for i in out})


def _podman_containers(prefix: str) -> str:
    return subprocess.run(
        ["podman", "ps", "-a", "-q", "--filter", f"label=isobench.env={prefix}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()


@pytest.fixture(scope="module")
def podman_images(tree):
    """The podman images made from the module's tree: removed at the end (the tree goes
    with its private cache, so they would otherwise be leftovers of `clean`)."""
    yield
    for image in _podman_images(tree.key):
        subprocess.run(["podman", "rmi", "-f", image], capture_output=True, timeout=120)


@pytest.mark.requires("podman")
def test_ctrl_c_during_a_podman_import_leaves_no_image(tree, bundle):
    """Ctrl-C while the tree streams into `podman import`: the import is killed before
    its input ends, no image has the tag, no importer is left."""
    import signal
    import threading
    from types import SimpleNamespace

    from bench.envs import podman

    fake = SimpleNamespace(hash=f"ctrlc{os.getpid()}", probes=bundle.probes)  # a tag of its own
    tag = img.rootfs_image_tag(tree.key, fake.hash)
    stream = img.rootfs_image_stream

    def slow(rootfs, b):
        for chunk in stream(rootfs, b):
            yield chunk
            time.sleep(0.05)  # 1 MiB chunks: a minbase tree takes seconds

    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    mp = pytest.MonkeyPatch()
    mp.setattr(img, "rootfs_image_stream", slow)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            podman._ensure_rootfs_image(fake, tree)
    finally:
        timer.cancel()
        mp.undo()
    assert podman._image_id(tag) is None
    assert _pgrep(f"podman import .*{fake.hash}") == ""


@pytest.mark.requires("podman")
def test_podman_runs_from_the_tree_and_reuses_its_image(ctx, bundle, tree, podman_images):
    before = _untouched(tree)
    env = PodmanEnv({"rootfs": NAME}, ctx.for_env(1))
    bare = PodmanEnv({}, ctx.for_env(2))
    try:
        env.prepare(bundle)
        bare.prepare(bundle)
        _runs_inside(env, bare)
        described = _described(env, tree)
        assert described["image"]["tag"] == img.rootfs_image_tag(tree.key, bundle.hash)
        labels = json.loads(
            subprocess.run(
                ["podman", "image", "inspect", "--format", "{{json .Labels}}", env._image_id],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
        )
        assert labels[img.ROOTFS_LABEL] == tree.key and labels[img.BUNDLE_LABEL] == bundle.hash
        again = PodmanEnv({"rootfs": NAME}, ctx.for_env(3))
        again.prepare(bundle)  # present: reused, not imported again
        assert again.describe()["image"]["id"] == described["image"]["id"]
        again.cleanup()
    finally:
        env.cleanup()
        bare.cleanup()
    assert _podman_images(tree.key) == [described["image"]["id"]]
    assert _podman_containers(env.ctx.prefix) == "" == _podman_containers(bare.ctx.prefix)
    assert _untouched(tree) == before


@pytest.mark.requires("podman")
def test_clean_finds_a_podman_image_whose_rootfs_is_gone(
    ctx, bundle, tree, podman_images, tmp_path, monkeypatch
):
    env = PodmanEnv({"rootfs": NAME}, ctx)
    try:
        env.prepare(bundle)
    finally:
        env.cleanup()
    here = tmp_path / "here"  # a cache with the bundle and the rootfs: the image is kept
    (here / "bundles" / bundle.hash).mkdir(parents=True)
    (here / "rootfs" / tree.key).mkdir(parents=True)
    monkeypatch.setenv("ISOBENCH_CACHE", str(here))
    assert [i for i in PodmanEnv.leftovers() if tree.key in i.what] == []
    elsewhere = tmp_path / "elsewhere"  # a cache with the bundle but not the rootfs
    (elsewhere / "bundles" / bundle.hash).mkdir(parents=True)
    monkeypatch.setenv("ISOBENCH_CACHE", str(elsewhere))
    (gone,) = [i for i in PodmanEnv.leftovers() if tree.key in i.what]
    assert gone.what.startswith("podman image ")
    assert f"rootfs {tree.key} no longer in the cache" in gone.what
    gone.remove()
    assert _podman_images(tree.key) == []


# ---------------------------------------------------------------- oci


def _mounts_of(*paths: Path) -> list[str]:
    text = Path("/proc/self/mountinfo").read_text()
    return [ln for ln in text.splitlines() if any(str(p) in ln for p in paths)]


@pytest.mark.requires("oci", "root")
def test_oci_runs_runc_on_an_overlay_of_the_tree(ctx, bundle, tree):
    """The bundle's rootfs is an overlay of the tree with the probes in its upper layer:
    a held probe's root has the tree's files; the tree is never written; cleanup
    unmounts the overlay and leaves an empty scratch directory."""
    before = _untouched(tree)
    env = OciEnv({"rootfs": NAME}, ctx.for_env(1))
    bare = OciEnv({}, ctx.for_env(2))
    try:
        env.prepare(bundle)
        bare.prepare(bundle)
        _runs_inside(env, bare)
        _described(env, tree)
        held = env.start(HOLD, timeout=60)
        assert held.wait_ready(30)
        state = subprocess.run(
            [*runtime_argv("runc", "none"), "state", held.name],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        pid = json.loads(state.stdout)["pid"]  # the container's init: the probe
        root = Path(f"/proc/{pid}/root")
        assert (root / MARKER_DIR.lstrip("/") / "marker.txt").read_text() == MARKER
        assert (root / "etc/debian_version").read_text() == (
            tree.tree / "etc/debian_version"
        ).read_text()
        assert os.readlink(f"/proc/{pid}/exe") == roots.probe_path("hold")
        assert held.stop().status == "ok"
        assert not (tree.tree / "isobench").exists()
    finally:
        env.cleanup()
        bare.cleanup()
    assert _mounts_of(ctx.scratch) == []
    assert not any(env.ctx.scratch.iterdir()), list(env.ctx.scratch.iterdir())
    assert _untouched(tree) == before


@pytest.mark.requires("oci", "root")
def test_oci_runsc_runs_from_the_tree(ctx, bundle, tree):
    if not OciEnv.probe({"runtime": "runsc"}).ok:
        missing("runsc: " + OciEnv.probe({"runtime": "runsc"}).reason)
    env = OciEnv({"rootfs": NAME, "runtime": "runsc"}, ctx.for_env(1))
    try:
        env.prepare(bundle)
        launch = env.launch(IN_MARKER, timeout=60)
        assert launch.status == "ok", (launch.reason, launch.stderr_tail)
    finally:
        env.cleanup()
    assert _mounts_of(ctx.scratch) == [] and not any(env.ctx.scratch.iterdir())


def test_only_overlays_in_a_marked_scratch_directory_are_leftovers(tmp_path):
    """An overlay at `rootfs` is isobench's only below a directory whose owner marker
    says so; a look-alike (no marker, another name, another type) is never listed."""
    from bench.scratch import MARKER

    mine = tmp_path / "isobench-r1-abc" / "e1" / ROOTFS
    mine.mkdir(parents=True)
    (tmp_path / "isobench-r1-abc" / MARKER).write_text('{"run_id": "r1", "pid": 1}')
    alike = tmp_path / "isobench-r2-def" / "e1" / ROOTFS
    alike.mkdir(parents=True)
    line = "41 1 0:50 / {} rw,relatime - {} overlay rw,lowerdir=/t,upperdir=/u,workdir=/w"
    info = "\n".join(
        [
            line.format(mine, "overlay"),
            line.format(alike, "overlay"),
            line.format(mine.parent / "other", "overlay"),
            line.format(mine, "tmpfs"),
        ]
    )
    assert overlay_leftovers(info) == [str(mine)]


@pytest.mark.requires("oci", "root")
def test_clean_detaches_an_overlay_a_killed_run_left(tree, bundle, monkeypatch):
    """A run killed with its overlay mounted: `clean` lists the mount (named by its
    scratch path, so a live run keeps it) before the scratch directory, and detaches it;
    the tree below is untouched."""
    monkeypatch.setenv("ISOBENCH_CACHE", str(tree.root.parent.parent))
    run_id = f"ov{os.getpid()}"
    scratch = new_scratch(run_id)
    env = OciEnv({"rootfs": NAME}, Context(run_id, scratch, tree.root.parent.parent).for_env(1))
    try:
        env.prepare(bundle)  # then "killed": no cleanup
        point = str(env.ctx.scratch / ROOTFS)
        assert point in overlay_leftovers()
        (item,) = [i for i in OciEnv.leftovers() if point in i.what]
        assert still_in_use(item.what, {run_id: os.getpid()}).startswith(f"run {run_id}")
        item.remove()
        assert _mounts_of(scratch) == []
        assert (env.ctx.scratch / OVERLAY / "upper" / roots.PROBE_DIR.lstrip("/")).is_dir()
        assert not (tree.tree / "isobench").exists()
    finally:
        env.cleanup()  # idempotent: nothing mounted any more
        shutil.rmtree(scratch, ignore_errors=True)
    assert point not in overlay_leftovers()


# ---------------------------------------------------------------- cri


@pytest.mark.requires("cri")
def test_cri_runs_pods_from_the_trees_image(ctx, bundle, tree):
    """The pod's container image is the tree plus the probes, imported into isobench's own
    containerd without a registry; the daemon, its images and the pods go at cleanup."""
    from bench.envs.cri_daemon import find_private

    before = _untouched(tree)
    env = CriEnv({"rootfs": NAME}, ctx.for_env(1))
    env.ctx.scratch.mkdir(parents=True)
    try:
        env.prepare(bundle)
        _runs_inside(env, None, ("startup", "io"))  # syscall: as from any image
        described = _described(env, tree)
        ref = ci.rootfs_ref(tree.key, bundle.hash)
        assert described["images"]["rootfs"] == ref and "probes" not in described["images"]
        assert env._client.has_image(ref)
        assert (ctx.cache / "cri" / f"rootfs-{tree.key}-{bundle.hash}.layer.json").is_file()
    finally:
        env.cleanup()
    assert [f for f in find_private() if f.lay.prefix == env.ctx.prefix] == []
    assert not any(env.ctx.scratch.iterdir())
    assert not [p for p in find_leftovers() if env.ctx.prefix in p.name]
    assert _untouched(tree) == before


# ---------------------------------------------------------------- a run


@pytest.mark.requires("podman", "oci")
def test_a_quick_run_records_the_tree_in_the_manifest(tree, tmp_path, podman_images):
    """Through the runner: the manifest keeps each environment's description (cri's,
    checked above, is left out here: its own containerd and import cost ~8 s more)."""
    envs = [f"podman:rootfs={NAME}", f"oci:rootfs={NAME}"]
    env = {
        **os.environ,
        "ISOBENCH_CACHE": str(tree.root.parent.parent),
        "ISOBENCH_LOCK": str(tmp_path / "lock"),
        "PYTHONPATH": str(Path(__file__).parents[1]),
    }
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.cli",
            "run",
            *(a for e in envs for a in ("--env", e)),
            "--workload",
            "startup",
            "--quick",
            "--rounds",
            "1",
            "--max-rounds",
            "1",
            "--results",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    (run,) = (tmp_path / "r").iterdir()
    manifest = json.loads((run / "manifest.json").read_text())
    for spec in envs:
        described = manifest["environments"][spec]
        assert described["available"], described["reason"]
        assert described["rootfs"]["key"] == tree.key and described["rootfs"]["packages"]
        assert described["options"]["rootfs"] == NAME
    samples = [json.loads(ln) for ln in (run / "samples.jsonl").read_text().splitlines()]
    assert {s["env"] for s in samples if s["status"] == "ok"} == set(envs)
    run_id = manifest["run_id"]
    assert not [p for p in find_leftovers() if run_id in p.name]
    assert not [p for p in overlay_leftovers() if run_id in p]
    assert _pgrep(run_id) == ""
