"""`isobench rootfs build`: a Debian tree made by mmdebstrap from the host's own Debian
release and apt sources, packages added, pip requirements installed inside, files copied.

The key is a hash of the recipe: suite, variant, architecture, the apt sources and the
exact InRelease files the build resolved packages from (the mirror's snapshot), the
packages, the pip requirements, the content of every copied file and mmdebstrap's
version. mmdebstrap runs in a private mount namespace and its own session: Ctrl-C stops
it (TERM, then KILL) and even a killed build leaves no mount behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from bench.rootfs._common import (
    BUILD_TIMEOUT_S,
    CALL_TIMEOUT_S,
    CLEAN_ENV,
    Rootfs,
    RootfsError,
    check_name,
    inspect_tree,
    last_line,
    make_or_reuse,
    need_root,
    read_or_empty,
    run,
    run_logged,
    tree_hash,
)

FORMAT = 1
VARIANT = "apt"  # mmdebstrap: Essential:yes packages + apt (smaller than minbase)
PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")  # Debian policy 5.6.1
PYPI = "https://pypi.org/simple/pip/"
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


@dataclass(frozen=True)
class Copy:
    src: Path
    dest: str  # absolute path inside the tree

    def content_hash(self) -> str:
        return tree_hash(self.src, owners=False)


def parse_copy(spec: str) -> Copy:
    """SRC:DEST (split at the last ':'; DEST absolute inside the rootfs)."""
    src, sep, dest = spec.rpartition(":")
    if not sep or not src or not dest.startswith("/"):
        raise RootfsError(
            f"--copy {spec}: expected SRC:DEST with DEST an absolute path "
            "inside the rootfs (e.g. ./bench:/opt/bench)"
        )
    parts = [p for p in dest.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise RootfsError(f"--copy {spec}: DEST must name a path below / without . or ..")
    path = Path(src).expanduser()
    if not path.exists() and not path.is_symlink():
        raise RootfsError(f"--copy {spec}: {src} does not exist")
    if not (path.is_file() or path.is_dir()):
        raise RootfsError(f"--copy {spec}: {src} is neither a file nor a directory")
    return Copy(path.resolve(), "/" + "/".join(parts))


def check_packages(packages: list[str]) -> list[str]:
    """Names only (no versions, no options), each known to the host's apt lists when it
    has any (the build resolves them again from the mirror itself)."""
    for p in packages:
        if not PACKAGE_RE.fullmatch(p):
            raise RootfsError(f"--package {p}: not a Debian package name")
    if packages and _apt_lists_present():
        for p in packages:
            r = run(["apt-cache", "show", "--no-all-versions", p], CALL_TIMEOUT_S)
            if r.returncode != 0 or not r.stdout.strip():
                raise RootfsError(
                    f"--package {p}: unknown to apt on this host (apt-cache show {p} finds nothing)"
                )
    return sorted(set(packages))


def check_pip(reqs: list[str], probe_url: str = PYPI) -> list[str]:
    """Requirement strings as pip takes them (no options); PyPI must be reachable."""
    for r in reqs:
        if not r.strip() or r.lstrip().startswith("-") or "\n" in r:
            raise RootfsError(f"--pip {r!r}: a requirement like name==1.2, not an option")
    if reqs:
        try:
            with urllib.request.urlopen(probe_url, timeout=15):
                pass
        except (urllib.error.URLError, OSError) as e:
            why = getattr(e, "reason", e)
            raise RootfsError(
                f"--pip needs PyPI reachable ({probe_url}: {why}); use Debian packages "
                "instead, e.g. --package python3-pytest-benchmark"
            ) from None
    return list(reqs)


def host_suite(os_release: str | None = None) -> str:
    """VERSION_CODENAME of /etc/os-release (a Debian host's release: bookworm)."""
    text = os_release if os_release is not None else read_or_empty("/etc/os-release")
    fields = dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")
    )
    codename = fields.get("VERSION_CODENAME", "").strip().strip('"')
    if fields.get("ID", "").strip('"') != "debian" or not codename:
        raise RootfsError(
            "rootfs build needs a Debian host (its release and apt sources "
            "are the build's); import an image instead: isobench rootfs import"
        )
    return codename


def parse_indextargets(text: str, suite: str) -> list[str]:
    """Pure: `apt-get indextargets` output -> one-line apt sources ("deb URI SUITE COMP")
    for the binary targets of `suite` and its -updates/-security suites, in order."""
    out: list[str] = []
    for block in text.split("\n\n"):
        f = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        release = f.get("Release", "")
        if f.get("Target-Of") != "deb" or f.get("Identifier") != "Packages":
            continue
        if release != suite and not release.startswith(f"{suite}-"):
            continue
        line = f"deb {f['Repo-URI']} {release} {f['Component']}"
        if line not in out:
            out.append(line)
    return out


def host_sources(suite: str) -> list[str]:
    r = run(["apt-get", "indextargets"], CALL_TIMEOUT_S)
    sources = parse_indextargets(r.stdout, suite) if r.returncode == 0 else []
    if not sources:
        raise RootfsError(
            f"no apt source for {suite} on this host (apt-get indextargets): "
            "add the Debian mirror to /etc/apt/sources.list.d/"
        )
    return sources


# ---------------------------------------------------------------------------- build


def build(
    name: str,
    packages: list[str] = (),
    pip: list[str] = (),
    copies: list[Copy] = (),
    *,
    cache: Path | None = None,
    log=lambda msg: None,
) -> Rootfs:
    """Build (or find) the rootfs `name`. A name already built from the same recipe is
    returned as it is (its bytes are pinned until `remove`); a name built from another
    recipe is refused."""
    check_name(name)
    need_root("rootfs build")
    for tool in ("mmdebstrap", "unshare", "chroot"):
        if not shutil.which(tool):
            raise RootfsError(f"rootfs build needs {tool}: apt-get install mmdebstrap")
    suite = host_suite()
    sources = host_sources(suite)
    pkgs = check_packages(list(packages))
    if pip:
        pkgs = sorted(set(pkgs) | {"python3-pip"})
    reqs = check_pip(list(pip))
    recipe = {
        "format": FORMAT,
        "suite": suite,
        "variant": VARIANT,
        "architecture": _dpkg_arch(),
        "sources": sources,
        "packages": pkgs,
        "pip": reqs,
        "copies": [{"dest": c.dest, "hash": c.content_hash()} for c in copies],  # not src
        "mmdebstrap": _mmdebstrap_version(),
    }

    def same(record: dict) -> bool:
        return bool(record.get("recipe")) and _same_recipe(record["recipe"], recipe)

    def make(tmp: Path) -> dict:
        tree = tmp / "tree"
        log(f"mmdebstrap {suite} ({VARIANT}, {len(pkgs)} packages) …")
        _mmdebstrap(suite, VARIANT, pkgs, sources, tree, tmp / "mmdebstrap.log")
        releases = _take_apt_lists(tree)
        if reqs:
            log(f"pip install {' '.join(reqs)} …")
            _pip_install(tree, reqs)
        for c in copies:
            _copy_in(c, tree)
        recipe["releases"] = releases
        key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
        return {
            "key": key,
            "source": "build",
            "recipe": recipe,
            "copied_from": {c.dest: str(c.src) for c in copies},
            **inspect_tree(tree, python=bool(reqs)),
        }

    other = f" with another recipe: `isobench rootfs rm {name}` first, or pick another name"
    return make_or_reuse(name, cache, log, make, same, "built from the same recipe", other)


def _same_recipe(a: dict, b: dict) -> bool:
    """The same request: everything but the mirror state the build resolved from."""
    skip = ("releases", "mmdebstrap")
    return {k: v for k, v in a.items() if k not in skip} == {
        k: v for k, v in b.items() if k not in skip
    }


def _mmdebstrap(suite, variant, packages, sources, tree: Path, log_path: Path) -> None:
    argv = [
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "mmdebstrap",
        "--mode=root",
        f"--variant={variant}",
        "--format=directory",
        "--skip=cleanup/apt/lists",  # read the InRelease files the build used, then drop
    ]
    if packages:
        argv.append("--include=" + ",".join(packages))
    argv += [suite, str(tree), *sources]
    with open(log_path, "w+") as logf:
        rc = run_logged(argv, logf, BUILD_TIMEOUT_S)
        logf.seek(0)
        text = logf.read()
    if rc != 0:
        errors = [ln for ln in text.splitlines() if ln.startswith(("E: ", "mmdebstrap: E"))]
        raise RootfsError(f"mmdebstrap failed (exit {rc}): {(errors or [last_line(text)])[0]}")


def _take_apt_lists(tree: Path) -> dict[str, str]:
    """sha256 of each InRelease the build resolved packages from; then the lists are
    removed, as mmdebstrap's own cleanup would have."""
    lists = tree / "var/lib/apt/lists"
    out = {}
    for f in sorted(lists.glob("*")):
        if f.is_file() and f.name.endswith(("_InRelease", "_Release")):
            out[f.name] = hashlib.sha256(f.read_bytes()).hexdigest()
    for f in lists.iterdir():
        if f.is_file() and f.name != "lock":
            f.unlink()
    if not out:
        raise RootfsError(f"mmdebstrap left no InRelease files in {lists}")
    return out


def host_ca_bundle(env: dict | None = None) -> Path | None:
    """The CA bundle the host's pip trusts ($PIP_CERT, $REQUESTS_CA_BUNDLE,
    $SSL_CERT_FILE, else Debian's bundle): pip inside the rootfs is given the same, so a
    host behind a TLS-inspecting proxy reaches PyPI from the chroot as it does itself."""
    env = os.environ if env is None else env
    for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if env.get(var) and Path(env[var]).is_file():
            return Path(env[var])
    default = Path("/etc/ssl/certs/ca-certificates.crt")
    return default if default.is_file() else None


def _pip_install(tree: Path, reqs: list[str]) -> None:
    """pip install inside the tree (chroot), with the host's resolv.conf and CA bundle
    placed there for the install only."""
    resolv = tree / "etc/resolv.conf"
    had = resolv.is_symlink() or resolv.exists()
    saved = resolv.read_bytes() if resolv.is_file() and not resolv.is_symlink() else None
    ca = host_ca_bundle()
    ca_inside = tree / "tmp" / f"isobench-ca-{secrets.token_hex(4)}.pem"
    env = {**CLEAN_ENV, **{k: v for k, v in os.environ.items() if k in PROXY_VARS}}
    argv = [
        "chroot",
        str(tree),
        "python3",
        "-m",
        "pip",
        "install",
        "--isolated",
        "--no-cache-dir",
        "--no-input",
        "--break-system-packages",
        "--root-user-action=ignore",
        "--disable-pip-version-check",
    ]
    try:
        if not had:
            shutil.copyfile("/etc/resolv.conf", resolv)
        if ca is not None:
            shutil.copyfile(ca, ca_inside)
            argv += ["--cert", f"/tmp/{ca_inside.name}"]
        r = run([*argv, *reqs], BUILD_TIMEOUT_S, env=env)
        if r.returncode != 0:
            lines = r.stderr.splitlines()
            why = [ln for ln in lines if ln.startswith("Could not fetch URL")]
            why += [ln for ln in lines if ln.startswith("ERROR")]
            raise RootfsError(
                f"pip install in the rootfs failed: {(why or [last_line(r.stderr + r.stdout)])[0]}"
            )
    finally:
        ca_inside.unlink(missing_ok=True)
        if not had:
            resolv.unlink(missing_ok=True)
        elif saved is not None:
            resolv.write_bytes(saved)
    for d in tree.glob("usr/local/lib/python3*/dist-packages"):
        for cache in d.rglob("__pycache__"):
            shutil.rmtree(cache)  # written at install time, with timestamps: not content


def _copy_in(c: Copy, tree: Path) -> None:
    parent = inside(tree, str(Path(c.dest).parent))
    parent.mkdir(parents=True, exist_ok=True)
    target = parent / Path(c.dest).name
    if c.src.is_dir():
        shutil.copytree(c.src, target, symlinks=True, dirs_exist_ok=True)
    else:
        if target.is_dir() and not target.is_symlink():
            raise RootfsError(f"--copy {c.src}:{c.dest}: {c.dest} is a directory in the rootfs")
        if target.is_symlink():
            target.unlink()
        shutil.copy2(c.src, target)


def inside(tree: Path, path: str) -> Path:
    """`path` (absolute, as seen inside the rootfs) as a host path under `tree`,
    symlinks resolved against the tree's root, never leaving it."""
    resolved = Path(tree)
    parts = [p for p in path.split("/") if p]
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            resolved = resolved.parent if resolved != Path(tree) else resolved
            continue
        nxt = resolved / part
        if nxt.is_symlink():
            hops += 1
            if hops > 40:
                raise RootfsError(f"{path}: too many symbolic links inside the rootfs")
            target = os.readlink(nxt)
            if target.startswith("/"):
                resolved = Path(tree)
            parts = [p for p in target.split("/") if p] + parts
            continue
        resolved = nxt
    return resolved


def _apt_lists_present() -> bool:
    return any(Path("/var/lib/apt/lists").glob("*_Packages*"))


def _dpkg_arch() -> str:
    r = run(["dpkg", "--print-architecture"], CALL_TIMEOUT_S)
    return r.stdout.strip()


def _mmdebstrap_version() -> str:
    r = run(["mmdebstrap", "--version"], CALL_TIMEOUT_S)
    return r.stdout.strip()
