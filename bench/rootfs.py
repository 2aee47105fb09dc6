"""Root filesystems as the unit of "same bytes" for a user's own workloads (issue 16).

A rootfs is a Debian tree built with mmdebstrap from the host's own Debian release and
apt sources (`build`), or a docker/podman image's filesystem (`import_image`). Either is
kept in the cache as <cache>/rootfs/<key>/ with

    tree/        the root filesystem (owned by root, as it would be inside a container)
    rootfs.json  the record: key, source, recipe, packages (dpkg inside), pip freeze,
                 size (allocated bytes), content hash of the tree
    rootfs.tar / rootfs-<headroom>M.ext4   derived outputs, made on first use

and <cache>/rootfs/names/<NAME> is a symlink to ../<key>. The key of a build is a hash of
its recipe: suite, variant, architecture, the apt sources and the exact InRelease files
the build resolved packages from (the mirror's snapshot), packages, pip requirements,
and the content of every copied file. The key of an import is the content hash of the
exported tree (paths, types, modes, owners, file contents, link targets; no mtimes).

Everything is made in a `.building-*` directory beside the store and renamed into place
when complete; an interrupted build leaves nothing (mmdebstrap runs in a private mount
namespace, so even a killed build leaves no mount behind), and a `.building-*` directory
whose process is gone is removed by the next build or listing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import interrupt, scratch
from bench.footprint import du
from bench.resources import cache_dir

FORMAT = 1
VARIANT = "apt"  # mmdebstrap: Essential:yes packages + apt (smaller than minbase)
NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
PACKAGE_RE = re.compile(r"[a-z0-9][a-z0-9+.-]+")  # Debian policy 5.6.1
PYPI = "https://pypi.org/simple/pip/"
BUILD_TIMEOUT_S = 1800
CALL_TIMEOUT_S = 120
STOP_GRACE_S = 30
IMPORT_LABEL = "isobench"  # the label `isobench clean` looks for on leftover containers
CLEAN_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
}
PROXY_VARS = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY")


class RootfsError(RuntimeError):
    """Bad input or a failed step; the message is one line a user can act on."""


# ---------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Rootfs:
    """One stored root filesystem: its directory in the cache and its record."""

    name: str
    root: Path  # <cache>/rootfs/<key>
    record: dict

    @property
    def key(self) -> str:
        return self.record["key"]

    @property
    def tree(self) -> Path:
        return self.root / "tree"

    def describe(self) -> dict:
        """What a run's manifest keeps about the rootfs it ran from."""
        r = self.record
        return {
            "name": self.name,
            "hash": r["key"],
            "source": r["source"],
            "content": r["content"],
            "size": r["size"],
            "packages": r["packages"],
            "pip": r.get("pip_freeze", []),
            "recipe": r.get("recipe") or r.get("image"),
        }

    def tar_file(self) -> Path:
        """The tree as an uncompressed tar (numeric owners, xattrs): what `docker import`
        and `podman import` take. Made once, then kept beside the tree."""
        out = self.root / "rootfs.tar"
        if not out.is_file():
            _make_file(out, lambda tmp: _write_tar(self.tree, tmp))
        return out

    @contextlib.contextmanager
    def tar_stream(self) -> Iterator:
        """A readable binary stream of the same tar, made on the fly (nothing kept)."""
        proc = subprocess.Popen(
            tar_argv(self.tree, "-"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            yield proc.stdout
            proc.stdout.close()
            if proc.wait(CALL_TIMEOUT_S) != 0:
                raise RootfsError(f"tar of {self.tree}: {_tail(proc.stderr.read().decode())}")
        finally:
            if proc.poll() is None:  # the reader stopped early: tar has nothing to clean
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()

    def ext4_image(self, headroom_mib: int = 256) -> Path:
        """An ext4 image of the tree (mke2fs -d) with `headroom_mib` free, for a guest's
        root disk; a template: a guest should boot from a copy. Made once per size."""
        if headroom_mib < 0:
            raise RootfsError(f"ext4 headroom must be >= 0 MiB, not {headroom_mib}")
        out = self.root / f"rootfs-{headroom_mib}M.ext4"
        if not out.is_file():
            usage = self.record["size"]
            _make_file(out, lambda tmp: _write_ext4(self.tree, tmp, usage, headroom_mib, self.key))
        return out


def store_dir(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / "rootfs"


def load(name: str, cache: Path | None = None) -> Rootfs:
    """The rootfs called `name`; RootfsError when there is none."""
    check_name(name)
    link = store_dir(cache) / "names" / name
    if not link.is_symlink():
        raise RootfsError(f"no rootfs named {name}: `isobench rootfs ls` lists them")
    root = link.parent / os.readlink(link)
    try:
        record = json.loads((root / "rootfs.json").read_text())
    except (OSError, ValueError) as e:
        raise RootfsError(
            f"rootfs {name}: its record {root / 'rootfs.json'} is unreadable "
            f"({e}); `isobench rootfs rm {name}` and build it again"
        ) from None
    return Rootfs(name, root.resolve(), record)


def names(cache: Path | None = None) -> list[Rootfs]:
    """Every named rootfs, by name; stale `.building-*` directories are swept first."""
    store = store_dir(cache)
    sweep(store)
    out = []
    d = store / "names"
    for link in sorted(d.iterdir()) if d.is_dir() else ():
        with contextlib.suppress(RootfsError):
            out.append(load(link.name, cache))
    return out


def remove(name: str, cache: Path | None = None) -> bool:
    """Remove the name; the tree too when no other name points to it. Returns whether
    the tree was removed."""
    rfs = load(name, cache)
    store = store_dir(cache)
    (store / "names" / name).unlink()
    others = [n for n in names(cache) if n.key == rfs.key]
    if others:
        return False
    with interrupt.shielded():
        doomed = store / f".removing-{secrets.token_hex(4)}"
        os.rename(rfs.root, doomed)
        shutil.rmtree(doomed)
    return True


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):
        raise RootfsError(
            f"rootfs name {name!r}: lower-case letters, digits, '.', '_' and "
            "'-', starting with a letter or digit, at most 63 characters"
        )
    return name


# ---------------------------------------------------------------------------- recipes


@dataclass(frozen=True)
class Copy:
    src: Path
    dest: str  # absolute path inside the tree

    def content_hash(self) -> str:
        return tree_hash(self.src)


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
            r = _run(["apt-cache", "show", "--no-all-versions", p], CALL_TIMEOUT_S)
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
    text = os_release if os_release is not None else _read("/etc/os-release")
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
    r = _run(["apt-get", "indextargets"], CALL_TIMEOUT_S)
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
    _need_root("rootfs build")
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
        "copies": [{"dest": c.dest, "src": str(c.src), "hash": c.content_hash()} for c in copies],
        "mmdebstrap": _mmdebstrap_version(),
    }
    existing = _named(name, cache)
    if existing is not None:
        if existing.record.get("recipe") and _same_recipe(existing.record["recipe"], recipe):
            log(f"rootfs {name} exists ({existing.key}), built from the same recipe")
            return existing
        raise RootfsError(
            f"rootfs {name} exists ({existing.key}) with another recipe: "
            f"`isobench rootfs rm {name}` first, or pick another name"
        )
    store = store_dir(cache)
    with _building(store) as tmp:
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
        record = {
            "key": key,
            "source": "build",
            "recipe": recipe,
            **_inspect_tree(tree, python=bool(reqs)),
        }
        _commit(store, tmp, record)
    return _link(name, key, cache)


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
        rc = _run_logged(argv, logf, BUILD_TIMEOUT_S)
        logf.seek(0)
        text = logf.read()
    if rc != 0:
        errors = [ln for ln in text.splitlines() if ln.startswith(("E: ", "mmdebstrap: E"))]
        raise RootfsError(f"mmdebstrap failed (exit {rc}): {(errors or [_tail(text)])[0]}")


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
        r = _run([*argv, *reqs], BUILD_TIMEOUT_S, env=env)
        if r.returncode != 0:
            lines = r.stderr.splitlines()
            why = [ln for ln in lines if ln.startswith("Could not fetch URL")]
            why += [ln for ln in lines if ln.startswith("ERROR")]
            raise RootfsError(
                f"pip install in the rootfs failed: {(why or [_tail(r.stderr + r.stdout)])[0]}"
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


# ---------------------------------------------------------------------------- import


def import_image(
    image: str,
    name: str | None = None,
    engine: str = "docker",
    *,
    cache: Path | None = None,
    log=lambda msg: None,
) -> Rootfs:
    """The filesystem of a docker or podman image (`create` + `export`), keyed by the
    content hash of the tree."""
    if engine not in ("docker", "podman"):
        raise RootfsError(f"--engine {engine}: docker or podman")
    if not shutil.which(engine):
        raise RootfsError(f"rootfs import needs the {engine} command")
    if image.startswith("-") or not image.strip():
        raise RootfsError(f"rootfs import {image!r}: not an image reference")
    name = check_name(name or image_name(image))
    _need_root("rootfs import")
    r = _run([engine, "image", "inspect", image], CALL_TIMEOUT_S)
    if r.returncode != 0:
        raise RootfsError(
            f"no image {image} in {engine} ({_tail(r.stderr)}): {engine} pull or build it first"
        )
    meta = _image_meta(json.loads(r.stdout)[0], engine, image)
    existing = _named(name, cache)
    if existing is not None:
        if (existing.record.get("image") or {}).get("id") == meta["id"]:
            log(f"rootfs {name} exists ({existing.key}), imported from the same image")
            return existing
        raise RootfsError(
            f"rootfs {name} exists ({existing.key}): `isobench rootfs rm "
            f"{name}` first, or pass --name"
        )
    store = store_dir(cache)
    with _building(store) as tmp:
        tree = tmp / "tree"
        tree.mkdir()
        log(f"{engine} export {image} …")
        _export(engine, image, tree)
        info = _inspect_tree(tree, python=False)
        key = info["content"][:16]
        _commit(store, tmp, {"key": key, "source": f"{engine} image", "image": meta, **info})
    return _link(name, key, cache)


def image_name(image: str) -> str:
    """A rootfs name from an image reference: debian:bookworm -> debian-bookworm."""
    base = image.split("@", 1)[0].rsplit("/", 1)[-1].lower()
    return re.sub(r"[^a-z0-9._-]+", "-", base).strip("-._")[:63] or "image"


def _image_meta(attrs: dict, engine: str, ref: str) -> dict:
    cfg = attrs.get("Config") or {}
    return {
        "engine": engine,
        "ref": ref,
        "id": attrs.get("Id"),
        "tags": attrs.get("RepoTags") or [],
        "digests": attrs.get("RepoDigests") or [],
        "created": attrs.get("Created"),
        "architecture": attrs.get("Architecture"),
        "os": attrs.get("Os"),
        "env": cfg.get("Env") or [],
        "entrypoint": cfg.get("Entrypoint"),
        "cmd": cfg.get("Cmd"),
        "workdir": cfg.get("WorkingDir") or "",
        "user": cfg.get("User") or "",
    }


def _export(engine: str, image: str, tree: Path) -> None:
    cname = f"isobench-rootfs-import-{secrets.token_hex(4)}"
    r = _run(
        [
            engine,
            "create",
            "--name",
            cname,
            "--label",
            f"{IMPORT_LABEL}=1",
            "--entrypoint",
            "/bin/true",
            image,
        ],
        CALL_TIMEOUT_S,
    )
    if r.returncode != 0:
        raise RootfsError(f"{engine} create {image}: {_tail(r.stderr)}")
    try:
        exp = subprocess.Popen(
            [engine, "export", cname],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        untar = subprocess.Popen(
            [
                "tar",
                "-x",
                "-C",
                str(tree),
                "--numeric-owner",
                "--same-owner",
                "--same-permissions",
                "--xattrs",
                "--xattrs-include=*",
                "-f",
                "-",
            ],
            stdin=exp.stdout,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        exp.stdout.close()
        try:
            tar_err = untar.communicate(timeout=BUILD_TIMEOUT_S)[1]
            exp_err = exp.communicate(timeout=CALL_TIMEOUT_S)[1]
        except BaseException:
            _stop(untar)
            _stop(exp)
            raise
        if exp.returncode != 0:
            raise RootfsError(f"{engine} export {image}: {_tail(exp_err.decode())}")
        if untar.returncode != 0:
            raise RootfsError(f"unpacking {image}: {_tail(tar_err.decode())}")
    finally:
        with interrupt.shielded():
            _run([engine, "rm", "-f", cname], CALL_TIMEOUT_S)


# ---------------------------------------------------------------------------- the tree


def tree_hash(root: Path) -> str:
    """sha256 over every entry below `root` (or the file itself): path, type, mode,
    owner, content / link target / device; mtimes are not content."""
    h = hashlib.sha256()
    root = Path(root)

    def entry(path: Path, rel: str) -> None:
        st = os.lstat(path)
        h.update(f"{rel}\0{st.st_mode:o}\0{st.st_uid}\0{st.st_gid}\0".encode())
        if stat.S_ISLNK(st.st_mode):
            h.update(os.readlink(path).encode(errors="surrogateescape"))
        elif stat.S_ISREG(st.st_mode):
            with open(path, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            h.update(f"{st.st_rdev}".encode())
        h.update(b"\n")

    if root.is_symlink() or not root.is_dir():
        entry(root, ".")
        return h.hexdigest()
    entry(root, ".")
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for n in sorted(dirnames + filenames):
            p = Path(dirpath) / n
            entry(p, str(p.relative_to(root)))
    return h.hexdigest()


def parse_dpkg_query(text: str) -> list[list[str]]:
    """Pure: dpkg-query -W -f '${db:Status-Abbrev}\\t${Package}\\t${Version}\\t
    ${Architecture}\\n' -> [[package, version, arch]] of installed ones ("ii"), sorted."""
    out = []
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) == 4 and fields[0].strip() == "ii":
            out.append(fields[1:])
    return sorted(out)


def _inspect_tree(tree: Path, python: bool) -> dict:
    usage = du(tree)
    info = {
        "content": tree_hash(tree),
        "size": {
            "allocated": usage.allocated,
            "apparent": usage.apparent,
            "inodes": usage.inodes,
        },
        "packages": [],
        "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    admin = tree / "var/lib/dpkg"
    if (admin / "status").is_file():
        r = _run(
            [
                "dpkg-query",
                f"--admindir={admin}",
                "-W",
                "-f",
                "${db:Status-Abbrev}\t${Package}\t${Version}\t${Architecture}\n",
            ],
            CALL_TIMEOUT_S,
        )
        info["packages"] = parse_dpkg_query(r.stdout)
    else:
        info["packages_note"] = "no dpkg database in the tree"
    if python:
        r = _run(
            [
                "chroot",
                str(tree),
                "python3",
                "-m",
                "pip",
                "freeze",
                "--isolated",
                "--disable-pip-version-check",
            ],
            CALL_TIMEOUT_S,
            env=CLEAN_ENV,
        )
        info["pip_freeze"] = r.stdout.split() if r.returncode == 0 else []
    return info


# ---------------------------------------------------------------------------- outputs


def tar_argv(tree: Path, dest: str) -> list[str]:
    return [
        "tar",
        "--create",
        "--file",
        dest,
        "--directory",
        str(tree),
        "--numeric-owner",
        "--xattrs",
        "--xattrs-include=*",
        "--sort=name",
        ".",
    ]


def _write_tar(tree: Path, dest: Path) -> None:
    r = _run(tar_argv(tree, str(dest)), BUILD_TIMEOUT_S)
    if r.returncode != 0:
        raise RootfsError(f"tar of {tree}: {_tail(r.stderr)}")


def ext4_geometry(usage: dict, headroom_mib: int) -> tuple[int, int]:
    """Pure: (size in KiB, inode count) for an ext4 image holding a tree of `usage`
    (allocated bytes, inodes) with `headroom_mib` free: a quarter more than the tree for
    metadata and block rounding, plus the headroom; inodes with room for as many again."""
    kib = (usage["allocated"] * 5 // 4) // 1024 + 16 * 1024 + headroom_mib * 1024
    inodes = usage["inodes"] * 2 + 4096
    return kib, inodes


def _write_ext4(tree: Path, dest: Path, usage: dict, headroom_mib: int, key: str) -> None:
    kib, inodes = ext4_geometry(usage, headroom_mib)
    uuid = f"{key[:8]}-{key[8:12]}-4{key[13:16]}-8{key[1:4]}-{key[4:16]}"
    argv = [
        "mke2fs",
        "-q",
        "-F",
        "-t",
        "ext4",
        "-d",
        str(tree),
        "-L",
        "isobench-root",
        "-U",
        uuid,
        "-N",
        str(inodes),
        "-m",
        "0",
        "-E",
        "root_owner=0:0",
        str(dest),
        f"{kib}k",
    ]
    r = _run(argv, BUILD_TIMEOUT_S)
    if r.returncode != 0:
        raise RootfsError(f"mke2fs -d {tree}: {_tail(r.stderr)}")


def _make_file(out: Path, write) -> None:
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}")
    try:
        write(tmp)
        os.rename(tmp, out)
    finally:
        with interrupt.shielded():
            tmp.unlink(missing_ok=True)


# ---------------------------------------------------------------------------- store


@contextlib.contextmanager
def _building(store: Path) -> Iterator[Path]:
    """A marked `.building-*` directory in the store, removed whatever happens (after a
    successful commit there is nothing left to remove)."""
    store.mkdir(parents=True, exist_ok=True)
    sweep(store)
    tmp = Path(tempfile.mkdtemp(prefix=".building-", dir=store))
    owner = {"pid": os.getpid(), "boot_id": scratch._boot_id()}
    (tmp / scratch.MARKER).write_text(json.dumps(owner) + "\n")
    try:
        yield tmp
    finally:
        with interrupt.shielded():
            shutil.rmtree(tmp, ignore_errors=True)


def sweep(store: Path) -> list[Path]:
    """Remove `.building-*` / `.removing-*` directories whose process is gone."""
    removed = []
    for d in store.glob(".building-*") if store.is_dir() else ():
        data = scratch.owner(d)
        if data is None or not scratch.owner_alive(data):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    for d in store.glob(".removing-*") if store.is_dir() else ():
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _commit(store: Path, tmp: Path, record: dict) -> None:
    """Rename the finished tree into <store>/<key> (unless those bytes are there)."""
    final = store / record["key"]
    (tmp / scratch.MARKER).unlink()
    (tmp / "rootfs.json").write_text(json.dumps(record, indent=1) + "\n")
    (tmp / "mmdebstrap.log").unlink(missing_ok=True)
    if final.is_dir():
        return  # the same key: the same recipe or the same content, already stored
    tmp.chmod(0o755)  # mkdtemp's 0700 would hide the images from a guest's VMM user
    with interrupt.shielded():
        os.rename(tmp, final)
        tmp.mkdir()  # _building's cleanup removes this empty stand-in


def _named(name: str, cache: Path | None) -> Rootfs | None:
    try:
        return load(name, cache)
    except RootfsError:
        if (store_dir(cache) / "names" / name).is_symlink():
            raise
        return None


def _link(name: str, key: str, cache: Path | None) -> Rootfs:
    d = store_dir(cache) / "names"
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".{name}.{secrets.token_hex(4)}"
    os.symlink(f"../{key}", tmp)
    os.rename(tmp, d / name)
    return load(name, cache)


# ---------------------------------------------------------------------------- processes


def _run(argv: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run argv (its own process group), capture text output; on timeout or a signal the
    group is stopped (TERM, then KILL) before the exception goes on."""
    try:
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
    except OSError as e:
        raise RootfsError(f"{argv[0]}: {e.strerror}") from None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise RootfsError(f"{argv[0]} did not finish in {timeout:.0f} s") from None
    except BaseException:
        _stop(proc)
        raise
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _run_logged(argv: list[str], logf, timeout: float) -> int:
    proc = subprocess.Popen(
        argv,
        stdout=logf,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _stop(proc)
        raise RootfsError(f"{argv[0]} did not finish in {timeout:.0f} s") from None
    except BaseException:
        _stop(proc)
        raise


def _stop(proc: subprocess.Popen) -> None:
    """TERM the process group (mmdebstrap cleans up on it), KILL it after a grace."""
    with interrupt.shielded():
        for sig, grace in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, STOP_GRACE_S)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.communicate(timeout=grace)
                return
            except subprocess.TimeoutExpired:
                continue
            except ValueError:  # no pipes to read
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(grace)
                    return


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise RootfsError(f"{what} needs root (files owned by root, chroot, mounts)")


def _apt_lists_present() -> bool:
    return any(Path("/var/lib/apt/lists").glob("*_Packages*"))


def _dpkg_arch() -> str:
    r = _run(["dpkg", "--print-architecture"], CALL_TIMEOUT_S)
    return r.stdout.strip()


def _mmdebstrap_version() -> str:
    r = _run(["mmdebstrap", "--version"], CALL_TIMEOUT_S)
    return r.stdout.strip()


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def _tail(text: str) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1] if lines else "no output"
