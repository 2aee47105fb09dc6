"""Capability markers: `@pytest.mark.requires("docker")` skips a test on a machine that
lacks the capability, but in CI (CI=true) a missing capability is a failure."""

from __future__ import annotations

import os
import shutil
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
    from bench.envs.docker import DockerEnv

    av = DockerEnv.runtime_available("runsc")
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


@pytest.fixture(scope="session", autouse=True)
def leaves_the_host_as_found():
    """After the whole suite: no isobench container, guest, cgroup or scratch directory."""
    from bench.clean import find_all

    before = {item.what for item in find_all()}
    yield
    left = [item.what for item in find_all() if item.what not in before]
    assert not left, "the tests left behind: " + "; ".join(left)
