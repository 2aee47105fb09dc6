"""Capability markers: `@pytest.mark.requires("docker")` skips a test on a machine that
lacks the capability, but in CI (CI=true) a missing capability is a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import bundle as bundle_mod
from bench.envs import REGISTRY


def _root() -> tuple[bool, str]:
    return os.geteuid() == 0, "needs root"


def _kind(kind: str):
    def check() -> tuple[bool, str]:
        av = REGISTRY[kind].probe()
        return av.ok, av.reason

    return check


def _runsc() -> tuple[bool, str]:
    from bench.envs.docker_daemon import runtime_available

    av = runtime_available("runsc")
    return av.ok, av.reason


def _chromium() -> tuple[bool, str]:
    return shutil.which("chromium") is not None, "chromium not installed (apt-get install chromium)"


CAPABILITIES = {
    "root": _root,
    "cgroup": lambda: (
        os.geteuid() == 0 and Path("/sys/fs/cgroup").is_dir(),
        "needs root and /sys/fs/cgroup",
    ),
    "compiler": lambda: (shutil.which("gcc") is not None, "needs gcc"),
    "host": _kind("host"),
    "namespaces": _kind("namespaces"),
    "docker": _kind("docker"),
    "runsc": _runsc,
    "podman": _kind("podman"),
    "oci": _kind("oci"),
    "cri": _kind("cri"),
    "libvirt": _kind("libvirt"),
    "qemu": _kind("qemu"),
    "chromium": _chromium,
}


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "requires(*caps): capabilities the test needs (see conftest.CAPABILITIES)"
    )


_cache: dict[str, tuple[bool, str]] = {}


def pytest_runtest_setup(item):
    for mark in item.iter_markers("requires"):
        for cap in mark.args:
            if cap not in _cache:
                try:
                    _cache[cap] = CAPABILITIES[cap]()
                except Exception as e:  # a probe that raises is a missing capability
                    _cache[cap] = (False, f"{type(e).__name__}: {e}")
            ok, reason = _cache[cap]
            if not ok:
                msg = f"capability '{cap}' missing: {reason}"
                if os.environ.get("CI") == "true":
                    pytest.fail(msg + " (CI=true: a missing capability fails)", pytrace=False)
                pytest.skip(msg)


@pytest.fixture(scope="session")
def bundle():
    """The real probe bundle, compiled once per session into the normal cache."""
    return bundle_mod.build()


MARKER_ROOTFS = "tests-marker"  # the name of marker_rootfs's tree in its cache
MARKER_DIR = "/opt/isobench-test"  # only in that tree: copied in by the fixture
MARKER = "isobench rootfs marker\n"


def missing(why: str) -> None:
    """Skip; in CI (CI=true) a missing capability is a failure (as the marks)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI=true: a missing capability fails)", pytrace=False)
    pytest.skip(why)


@pytest.fixture(scope="session")
def marker_rootfs(tmp_path_factory):
    """One minbase rootfs with a marker directory (MARKER_DIR/marker.txt), in a cache of
    its own, built once for every test that runs a kind from a tree."""
    from bench import rootfs

    if os.geteuid() != 0:
        missing("needs root")
    if absent := [t for t in ("mmdebstrap", "unshare", "chroot") if not shutil.which(t)]:
        missing(f"needs {', '.join(absent)} (apt-get install mmdebstrap)")
    cache = tmp_path_factory.mktemp("marker-rootfs-cache")
    src = tmp_path_factory.mktemp("marker") / "m"
    src.mkdir()
    (src / "marker.txt").write_text(MARKER)
    env = {
        **os.environ,
        "ISOBENCH_CACHE": str(cache),
        "ISOBENCH_LOCK": str(src.parent / "lock"),
        "PYTHONPATH": str(Path(__file__).parents[1]),
    }
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.cli",
            "rootfs",
            "build",
            MARKER_ROOTFS,
            "--copy",
            f"{src}:{MARKER_DIR}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        cwd=src.parent,
    )
    assert res.returncode == 0, res.stderr
    yield rootfs.load(MARKER_ROOTFS, cache)
    shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def leaves_the_host_as_found():
    """After the whole suite: no isobench container, guest, cgroup or scratch directory."""
    from bench.clean import find_all

    before = {item.what for item in find_all()}
    yield
    left = [item.what for item in find_all() if item.what not in before]
    assert not left, "the tests left behind: " + "; ".join(left)
