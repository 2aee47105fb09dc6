"""The image made from the bundle: deterministic tar, unpacked rootfs, OCI config, and the
real docker import (tagged with the bundle hash, labelled, imported once)."""

from __future__ import annotations

import hashlib
import tarfile

import pytest

from bench.envs import image as img


def test_tar_is_deterministic_and_holds_the_same_bytes(bundle, tmp_path):
    a = img.write_rootfs_tar(bundle, tmp_path / "a.tar")
    b = img.write_rootfs_tar(bundle, tmp_path / "b.tar")
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tar:
        names = tar.getnames()
        for probe, want in bundle.probe_hashes.items():
            data = tar.extractfile(f"probes/{probe}").read()
            assert hashlib.sha256(data).hexdigest() == want
    assert "work" in names and "tmp" in names
    assert "probes/hold" in names  # held instances run the same bytes as everything else
    if bundle.busybox:
        assert "bin/sh" in names


def test_unpack_rootfs_is_idempotent(bundle, tmp_path):
    root = img.unpack_rootfs(bundle, tmp_path / "rootfs")
    assert (root / "probes" / "syscall").stat().st_mode & 0o111
    assert img.probe_path("hold") == "/probes/hold" and (root / "probes" / "hold").is_file()
    (root / "probes" / "marker").write_text("x")
    img.unpack_rootfs(bundle, root)  # same bundle: left as is
    assert (root / "probes" / "marker").exists()


def test_each_environment_unpacks_its_own_rootfs(bundle, tmp_path):
    """Two environments' rootfs share nothing: removing one leaves the other whole."""
    import shutil

    a = img.unpack_rootfs(bundle, tmp_path / "e1" / "rootfs")
    b = img.unpack_rootfs(bundle, tmp_path / "e2" / "rootfs")
    shutil.rmtree(a)
    assert (b / "probes" / "startup").read_bytes() == bundle.probes["startup"].read_bytes()
    assert img.unpack_rootfs(bundle, b) == b


def test_probe_layer_puts_the_same_probes_under_the_rootfs_probe_dir(bundle):
    """What a rootfs's tar gets added for docker: the bundle's probes, byte for byte, at
    the path host and namespaces bind them to, and the io directory; fixed metadata."""
    import io

    from bench.envs import roots

    layer = img.probe_layer(bundle)
    assert layer == img.probe_layer(bundle)
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        for probe, want in bundle.probe_hashes.items():
            member = tar.getmember(f".{roots.probe_path(probe)}")
            assert member.mode == 0o755 and member.uid == 0 and member.mtime == 0
            data = tar.extractfile(member).read()
            assert hashlib.sha256(data).hexdigest() == want
        assert tar.getmember(f".{roots.WORKDIR}").mode == 0o1777
    tag = img.rootfs_image_tag("k" * 16, bundle.hash)
    assert tag == f"isobench-rootfs:{'k' * 16}-{bundle.hash}"
    labels = img.rootfs_image_labels("k" * 16, bundle.hash)
    assert labels == {"isobench": "1", img.BUNDLE_LABEL: bundle.hash, img.ROOTFS_LABEL: "k" * 16}


def test_oci_config_namespaces_and_network():
    cfg = img.oci_config(["/probes/startup"], img.Path("/r"), "/isobench-x-1/probe")
    types = {ns["type"] for ns in cfg["linux"]["namespaces"]}
    assert types == {"pid", "mount", "ipc", "uts", "network"}
    assert "seccomp" not in cfg["linux"]
    assert cfg["process"]["terminal"] is False
    assert cfg["linux"]["cgroupsPath"] == "/isobench-x-1/probe"
    host = img.oci_config(["/probes/startup"], img.Path("/r"), "/x", network="host")
    assert "network" not in {ns["type"] for ns in host["linux"]["namespaces"]}


@pytest.mark.requires("docker")
def test_docker_image_is_imported_once(bundle, tmp_path):
    from bench.envs.docker_daemon import client

    cl = client()
    first = img.ensure_docker_image(cl, bundle, tmp_path)
    again = img.ensure_docker_image(cl, bundle, tmp_path)
    assert first.id == again.id
    assert img.image_tag(bundle.hash) in first.tags
    assert first.labels[img.LABEL] == "1"
    assert first.labels[img.BUNDLE_LABEL] == bundle.hash
