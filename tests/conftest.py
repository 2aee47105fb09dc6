"""Capability markers: `@pytest.mark.requires("docker")` skips a test on a machine that
lacks the capability, but in CI (CI=true) a missing capability is a failure.

Shared fixtures and helpers: `env_factory` (prepared environments of one run, cleaned
up after the test), `isobench(...)` (the CLI as a user runs it, a process of its own),
`build_rootfs(...)` (an `isobench rootfs build` into a private cache) and the session's
`bundle` and `marker_rootfs`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import bundle as bundle_mod
from bench.envs import REGISTRY
from bench.envs.base import Context, Environment
from bench.envs.guest import kvm
from bench.envs.vm import VmEnvironment
from bench.resources import cache_dir

ROOT = Path(__file__).parents[1]  # the checkout: the code `isobench(...)` runs


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
    "lxc": _kind("lxc"),
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


def isobench(
    *args, cache: Path | None = None, cwd: Path | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """`isobench ARGS` as a user runs it: a process of its own, on this checkout's code;
    with `cache`, that ISOBENCH_CACHE; with `cwd`, run there with a lock of its own."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if cache is not None:
        env["ISOBENCH_CACHE"] = str(cache)
    if cwd is not None:
        env["ISOBENCH_LOCK"] = str(cwd / "lock")
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=cwd,
    )


def build_rootfs(name: str, *args: str, cache: Path, cwd: Path | None = None, timeout=900):
    """`isobench rootfs build NAME ARGS` into the private `cache`; the rootfs it made
    (the test fails with the build's stderr when it did not)."""
    from bench import rootfs

    res = isobench("rootfs", "build", name, *args, cache=cache, cwd=cwd, timeout=timeout)
    assert res.returncode == 0, res.stderr
    return rootfs.load(name, cache)


class EnvFactory:
    """`make(kind or class, config)` -> a prepared environment of one test run: one run
    id, each environment its own scratch directory (made) and name prefix (Context
    .for_env). `cleanup()` cleans every one made (idempotent; the fixture calls it at
    the end, a test that checks what is left calls it first)."""

    def __init__(self, tmp_path: Path, request):
        self.tmp_path = tmp_path
        self.request = request
        self.made: list[Environment] = []

    def __call__(
        self,
        kind: str | type[Environment],
        config: dict | None = None,
        *,
        prepare: bool = True,
        bundle=None,
        cache: Path | None = None,
    ) -> Environment:
        cls = REGISTRY[kind] if isinstance(kind, str) else kind
        run = Context(f"t{os.getpid() % 10000}", self.tmp_path, cache or self.tmp_path / "cache")
        if cache is None and issubclass(cls, VmEnvironment):
            _with_kvm_verdict(run.cache)
        ctx = run.for_env(len(self.made) + 1)
        ctx.scratch.mkdir(parents=True, exist_ok=True)
        env = cls(dict(config or {}), ctx)
        self.made.append(env)
        if prepare:
            env.prepare(bundle or self.request.getfixturevalue("bundle"))
        return env

    def cleanup(self) -> list[Environment]:
        made, self.made = self.made, []
        for env in made:
            env.cleanup()
        return made


def _with_kvm_verdict(cache: Path) -> None:
    """A test's fresh cache gets the normal cache's KVM verdict (made there once): where
    /dev/kvm opens and guests hang, as here, every trial boot waits out its 20 s timeout.
    The trial itself is test_env_qemu's."""
    kvm.kvm_availability(trial=True)
    recorded = kvm.verdict_file(cache_dir())
    if recorded.exists():
        kvm.verdict_file(cache).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(recorded, kvm.verdict_file(cache))


@pytest.fixture
def env_factory(tmp_path, request):
    """Prepared environments of one run (EnvFactory), cleaned up after the test."""
    factory = EnvFactory(tmp_path, request)
    yield factory
    factory.cleanup()


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
    if os.geteuid() != 0:
        missing("needs root")
    if absent := [t for t in ("mmdebstrap", "unshare", "chroot") if not shutil.which(t)]:
        missing(f"needs {', '.join(absent)} (apt-get install mmdebstrap)")
    cache = tmp_path_factory.mktemp("marker-rootfs-cache")
    src = tmp_path_factory.mktemp("marker") / "m"
    src.mkdir()
    (src / "marker.txt").write_text(MARKER)
    yield build_rootfs(
        MARKER_ROOTFS, "--copy", f"{src}:{MARKER_DIR}", cache=cache, cwd=src.parent, timeout=600
    )
    shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def leaves_the_host_as_found():
    """After the whole suite: no isobench container, guest, cgroup or scratch directory."""
    from bench.clean import find_all

    before = {item.what for item in find_all()}
    yield
    left = [item.what for item in find_all() if item.what not in before]
    assert not left, "the tests left behind: " + "; ".join(left)
