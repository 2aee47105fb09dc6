"""The wheels a fleet host installs from, built on the controller: isobench's own wheel
(this very code: from the checkout it runs from, else the installed distribution) and a
wheelhouse of its dependencies at the versions installed here, plus pip's wheel to
install them with. Hosts need no package index.

The dependency wheelhouse is kept in the cache (<cache>/fleet/wheelhouse-<key>), keyed
by the requirement set (the pinned versions, this Python and platform), so the second
fleet run downloads nothing; isobench's wheel is kept keyed by its sources' hash."""

from __future__ import annotations

import hashlib
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from bench.resources import cache_dir

CHECKOUT = Path(__file__).resolve().parents[2]
SOURCES = ("bench", "workloads", "reports", "pyproject.toml", "README.md")


class WheelError(RuntimeError):
    """The wheels could not be built or downloaded; the message says why, in one line."""


@dataclass(frozen=True)
class Wheels:
    tar: Path  # every wheel, in one uncompressed tar (one copy per host)
    isobench: str  # isobench's wheel's file name
    pip: str  # pip's wheel's file name (the host's venv is made without pip)
    python: str  # "3.11 x86_64": what a host's Python must say to use them


def python_tag() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]} {platform.machine()}"


def _pip(*args: str) -> None:
    res = subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()] or ["(no output)"]
        raise WheelError(f"pip {args[0]} failed: {lines[-1].strip()}")


def _source_hash() -> str:
    h = hashlib.sha256()
    for name in SOURCES:
        top = CHECKOUT / name
        files = [top] if top.is_file() else sorted(top.rglob("*"))
        for p in files:
            if p.is_file() and "__pycache__" not in p.parts:
                h.update(str(p.relative_to(CHECKOUT)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:16]


def isobench_wheel(cache: Path) -> Path:
    """This isobench as a wheel: built from the checkout the code runs from (cached by
    its sources' hash), or the installed distribution's files packed again."""
    if not (CHECKOUT / "pyproject.toml").is_file():
        from bench.fleet.repack import repack_installed

        return repack_installed(cache / "isobench-installed")
    out = cache / f"isobench-{_source_hash()}"
    found = sorted(out.glob("isobench-*.whl"))
    if found:
        return found[0]
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
    try:
        _pip("wheel", "--quiet", "--no-deps", "--wheel-dir", str(tmp), str(CHECKOUT))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in cache.glob("isobench-*"):  # earlier sources' wheels: only this one is used
        if old != out:
            shutil.rmtree(old, ignore_errors=True)
    return sorted(out.glob("isobench-*.whl"))[0]


def _pins() -> list[str]:
    """name==version of every distribution installed here (pip's constraints: the
    hosts get the versions this controller runs with)."""
    pins = set()
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name.lower() != "isobench":
            pins.add(f"{name.lower()}=={dist.version}")
    return sorted(pins)


def _requirements(wheel: Path) -> list[str]:
    import zipfile

    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    return sorted(
        ln.split(":", 1)[1].strip()
        for ln in text.splitlines()
        if ln.startswith("Requires-Dist:") and "extra ==" not in ln
    )


def dependencies(cache: Path, wheel: Path) -> Path:
    """The dependency wheelhouse for `wheel`'s requirements at the pinned versions."""
    reqs, pins = _requirements(wheel), _pins()
    pip_pin = f"pip=={metadata.version('pip')}"
    key = hashlib.sha256(
        "\n".join([python_tag(), sys.platform, pip_pin, *reqs, "--", *pins]).encode()
    ).hexdigest()[:16]
    out = cache / f"wheelhouse-{key}"
    if (out / ".complete").is_file():
        return out
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=cache))
    try:
        constraints = tmp / "constraints.txt"
        constraints.write_text("\n".join(pins) + "\n")
        _pip(
            "download",
            "--quiet",
            "--only-binary=:all:",
            "--dest",
            str(tmp),
            "--constraint",
            str(constraints),
            *reqs,
            pip_pin,
        )
        constraints.unlink()
        (tmp / ".complete").write_text("\n".join(reqs) + "\n")
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _bundle() -> Path | None:
    """The controller's probe bundle, shipped along: a host whose compiler gives the
    same bundle key uses these very files (bench.fleet.remote puts them in its cache)
    instead of compiling its own. None where this machine cannot build it."""
    from bench import bundle

    try:
        return bundle.build().root
    except (bundle.BuildError, OSError):
        return None


def build(workdir: Path, cache: Path | None = None) -> Wheels:
    """Every wheel a host needs, in workdir/wheels.tar."""
    root = (cache or cache_dir()) / "fleet"
    root.mkdir(parents=True, exist_ok=True)
    own = isobench_wheel(root)
    deps = dependencies(root, own)
    tar = workdir / "wheels.tar"
    with tarfile.open(tar, "w") as t:
        for p in sorted(deps.glob("*.whl")):
            t.add(p, arcname=p.name)
        t.add(own, arcname=own.name)
        if probes := _bundle():
            t.add(probes, arcname=f"bundle/{probes.name}")
    pip = next((p.name for p in deps.glob("pip-*.whl")), None)
    if pip is None:
        raise WheelError(f"no pip wheel in {deps}")
    return Wheels(tar, own.name, pip, python_tag())
