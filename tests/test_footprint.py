"""Disk footprint: the pure helpers on recorded data (a find listing with hard links and
GNU du's answer for the same tree, docker's image and container inspect, podman's sizes),
the --footprint table, and real footprints of host, docker, podman and oci that are
checked against a second source (GNU du, the engine's CLI) and leave nothing behind,
also when interrupted mid-measure."""

from __future__ import annotations

import io
import json
import os
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from bench import catalog, footprint
from bench.envs import docker

DATA = Path(__file__).parent / "data" / "footprint"


def _by_what(result: dict) -> dict[str, dict]:
    assert "error" not in result, result.get("error")
    return {f["what"]: f for f in result["figures"]}


def _gnu_du(path: Path, apparent: bool = False) -> int:
    argv = ["du", "-s", "-x", "-b" if apparent else "-B1", str(path)]
    return int(subprocess.run(argv, capture_output=True, text=True, check=True).stdout.split()[0])


def _io():
    return catalog.load()["io"].invocation(quick=True, emulated=True)  # the smallest io run


# ---------------------------------------------------------------- pure, recorded


def test_tally_counts_hard_links_once_as_gnu_du_does():
    """tree.find: `find T -printf '%D %i %n %b %s %p\\n'` of a tree with a file linked
    three times, a sparse file and a symlink; tree.du: `du -s -B1 T` and `du -s -b T`."""
    entries = footprint.parse_find_listing((DATA / "tree.find").read_text())
    allocated, apparent = (int(x) for x in (DATA / "tree.du").read_text().split())
    usage = footprint.tally(entries)
    assert (usage.allocated, usage.apparent) == (allocated, apparent)
    linked = [e for e in entries if e[2] == 3]
    assert len(linked) == 3 and len({(e[0], e[1]) for e in linked}) == 1
    assert usage.inodes == len(entries) - 2  # the two extra links are not counted
    every_link = sum(e[3] * 512 for e in entries)
    assert every_link > usage.allocated  # counting each link would overstate it
    sparse = max(entries, key=lambda e: e[4] - e[3] * 512)
    assert sparse[4] > sparse[3] * 512  # the sparse file: apparent > allocated


def test_du_of_a_tree_matches_gnu_du(tmp_path):
    tree = tmp_path / "t"
    (tree / "d").mkdir(parents=True)
    (tree / "a").write_bytes(b"x" * 10000)
    os.link(tree / "a", tree / "d" / "a2")
    (tree / "s").symlink_to("a")
    with open(tree / "sparse", "wb") as f:
        f.truncate(8 << 20)
        f.write(b"y" * 4096)
    usage = footprint.du(tree)
    assert usage.allocated == _gnu_du(tree)
    assert usage.apparent == _gnu_du(tree, apparent=True)
    assert footprint.du(tree / "sparse").apparent == 8 << 20


def test_parse_size_takes_one_number_only():
    assert footprint.parse_size((DATA / "podman-image-size.txt").read_text(), "x") > 0
    assert footprint.parse_size((DATA / "podman-size-rw.txt").read_text(), "x") >= 0
    for bad in ("", "12 34", "Error: no such object", "-1", "1.5e6"):
        with pytest.raises(ValueError, match="podman"):
            footprint.parse_size(bad, "podman image inspect")


def test_docker_image_figures_from_recorded_attrs():
    attrs = json.loads((DATA / "docker-image.json").read_text())
    figs = {f["what"]: f for f in docker.docker_image_figures(attrs)}
    assert figs["image"]["bytes"] == attrs["Size"] > 0
    assert "1 layer(s)" in figs["image"]["counts"]
    virtual = figs["image (VirtualSize)"]
    if "VirtualSize" in attrs:
        assert virtual["bytes"] == attrs["VirtualSize"]
    else:  # API >= 1.44: said, not guessed
        assert virtual["bytes"] is None and "1.44" in virtual["reason"]
    older = {**attrs, "VirtualSize": attrs["Size"] + 7}
    figs = {f["what"]: f for f in docker.docker_image_figures(older)}
    assert figs["image (VirtualSize)"]["bytes"] == attrs["Size"] + 7


def test_docker_rw_figure_from_recorded_inspect():
    """docker-container-inspect-size.json: `docker container inspect --size` of a
    container that ran the io probe, after it exited."""
    inspect = docker.parse_inspect((DATA / "docker-container-inspect-size.json").read_text())
    assert inspect["State"]["ExitCode"] == 0 and "SizeRw" in inspect
    fig = docker.docker_rw_figure(inspect, "overlay")
    assert fig["bytes"] == inspect["SizeRw"] and "SizeRw" in fig["counts"]
    assert "storage=" not in fig["counts"]
    assert "storage=tmpfs" in docker.docker_rw_figure(inspect, "tmpfs")["counts"]
    assert "runsc" in docker.docker_rw_figure(inspect, "overlay", runsc=True)["counts"]
    for bad in ("[]", "{}", '[{"a": 1}, {"b": 2}]'):
        with pytest.raises(ValueError, match="docker inspect"):
            docker.parse_inspect(bad)
    none = docker.docker_rw_figure({k: v for k, v in inspect.items() if k != "SizeRw"}, "x")
    assert none["bytes"] is None and "SizeRw" in none["reason"]


def test_disk_table_from_a_manifest():
    from bench.commands.summary import disk_rows, print_disk

    manifest = {
        "environments": {
            "docker": {
                "disk": {
                    "figures": [
                        footprint.figure("image", 3 * 2**20 + 2**19, "Size"),
                        footprint.missing(
                            "writable layer after io", "the io launch was not ok: failed"
                        ),
                    ]
                }
            },
            "podman": {"disk": {"figures": [footprint.figure("writable layer after io", 12, "x")]}},
            "oci": {"disk": {"figures": [], "error": "RuntimeError: runc gone"}},
            "host": {"available": True},  # a run before disk footprints: no rows
        }
    }
    rows = disk_rows(manifest)
    assert rows == [
        ("docker", "image", "3.50"),
        ("docker", "writable layer after io", "– (the io launch was not ok: failed)"),
        ("podman", "writable layer after io", "0.00 (12 B)"),
        ("oci", "disk footprint", "not measured: RuntimeError: runc gone"),
    ]
    buf = io.StringIO()
    print_disk(manifest, Console(file=buf, width=200))
    text = buf.getvalue()
    assert "disk footprint" in text and "3.50" in text and "runc gone" in text
    buf = io.StringIO()
    print_disk({"environments": {"host": {}}}, Console(file=buf, width=200))
    assert buf.getvalue() == ""


# ---------------------------------------------------------------- real environments


@pytest.mark.requires("host", "root")
def test_host_footprint_is_the_probe_bundle(env_factory, bundle):
    from bench.envs.host import HostEnv

    env = env_factory(HostEnv)
    try:
        figs = _by_what(footprint.disk_footprint(env, bundle, io=_io()))
    finally:
        env.cleanup()
    assert figs["probe bundle"]["bytes"] == _gnu_du(bundle.root)
    assert figs["probe bundle (apparent)"]["bytes"] == _gnu_du(bundle.root, apparent=True)
    assert figs["per instance after io"]["bytes"] is None


def _containers(engine: str, prefix: str) -> str:
    argv = [engine, "ps", "-a", "-q", "--filter", f"name={prefix}"]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.requires("docker")
def test_docker_footprint_image_and_writable_layer(env_factory, bundle):
    from bench.envs.docker import DockerEnv

    env = env_factory(DockerEnv)
    try:
        figs = _by_what(footprint.disk_footprint(env, bundle, io=_io(), timeout=120))
        image_id = env.describe()["image"]["id"]
    finally:
        env.cleanup()
    cli = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Size}}", image_id],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert figs["image"]["bytes"] == int(cli) > 0
    rw = figs["writable layer after io"]
    assert isinstance(rw["bytes"], int) and rw["bytes"] >= 0, rw
    assert _containers("docker", env.ctx.prefix) == ""


@pytest.mark.requires("docker")
def test_docker_footprint_interrupted_mid_measure_leaves_nothing(env_factory, bundle, monkeypatch):
    from bench.envs.docker import DockerEnv

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(docker, "docker_rw_figure", interrupted)
    env = env_factory(DockerEnv)
    try:
        with pytest.raises(KeyboardInterrupt):
            footprint.disk_footprint(env, bundle, io=_io(), timeout=120)
        assert _containers("docker", env.ctx.prefix) == ""  # removed before the re-raise
    finally:
        env.cleanup()


@pytest.mark.requires("podman", "root")
def test_podman_footprint_image_and_writable_layer(env_factory, bundle):
    from bench.envs.podman import PodmanEnv

    env = env_factory(PodmanEnv)
    try:
        figs = _by_what(footprint.disk_footprint(env, bundle, io=_io(), timeout=120))
        image_id = env.describe()["image"]["id"]
    finally:
        env.cleanup()
    cli = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{.Size}}", image_id],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert figs["image"]["bytes"] == int(cli) > 0
    rw = figs["writable layer after io"]
    assert isinstance(rw["bytes"], int) and rw["bytes"] >= 0, rw
    assert _containers("podman", env.ctx.prefix) == ""


@pytest.mark.requires("oci", "root")
def test_oci_footprint_rootfs_and_bundle_dir(env_factory, bundle):
    from bench.envs.oci import BUNDLES, ROOTFS, OciEnv

    env = env_factory(OciEnv)
    try:
        rootfs = env.ctx.scratch / ROOTFS
        expected = _gnu_du(rootfs), _gnu_du(rootfs, apparent=True)
        figs = _by_what(footprint.disk_footprint(env, bundle, io=_io(), timeout=120))
        assert not any((env.ctx.scratch / BUNDLES).iterdir())  # the instance's is gone
    finally:
        env.cleanup()
    assert (figs["rootfs"]["bytes"], figs["rootfs (apparent)"]["bytes"]) == expected
    assert figs["bundle dir"]["bytes"] > 0  # its config.json
    assert figs["rootfs growth after io"]["bytes"] == 0  # the probe removed its files
    assert not any(env.ctx.scratch.iterdir())


@pytest.mark.requires("libvirt", "root")
def test_libvirt_footprint_guest_artefacts_and_io_disk(env_factory, bundle):
    from bench.envs.libvirt import LibvirtEnv

    env = env_factory(LibvirtEnv)
    try:
        inv = catalog.load()["io"].invocation(quick=True, emulated=env.emulated)
        figs = _by_what(footprint.disk_footprint(env, bundle, io=inv, timeout=300))
        image, template = env.image, env.disk_template
    finally:
        env.cleanup()
    assert figs["guest kernel"]["bytes"] == _gnu_du(image.kernel.path.resolve())
    assert figs["initramfs"]["bytes"] == _gnu_du(image.initramfs)
    assert figs["disk template"]["bytes"] == _gnu_du(template)
    assert figs["disk template (apparent)"]["bytes"] == template.stat().st_size
    disk = figs["io disk after io"]
    assert 0 < disk["bytes"] < template.stat().st_size, disk  # sparse, and written to
    assert not any(env.ctx.scratch.iterdir())  # the guest's copy is gone


@pytest.mark.requires("cri", "root")
def test_cri_footprint_image_store_and_archive(env_factory, bundle):
    from bench.envs.cri import CriEnv

    env = env_factory(CriEnv)
    try:
        figs = _by_what(footprint.disk_footprint(env, bundle, io=_io()))
        refs = env.describe()["images"]
    finally:
        env.cleanup()
    for name, ref in (("image", refs["probes"]), ("pause image", refs["pause"])):
        assert ref in figs[name]["counts"] and figs[name]["bytes"] > 0
        assert figs[f"{name} (OCI archive)"]["bytes"] > 0
    assert figs["writable layer after io"]["bytes"] is None  # said, not guessed
