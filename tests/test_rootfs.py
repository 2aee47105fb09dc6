"""Root filesystems (bench/rootfs/, `isobench rootfs`): pure helpers on recorded and
given input; a real mmdebstrap build (once per session, in a private cache), its tar
imported by docker and podman, its ext4 image checked by e2fsck, an image imported back,
bad input as one line with exit 2, and an interrupted build that leaves nothing."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import rootfs as rf
from bench.rootfs import builder as rb
from bench.rootfs import importer as ri
from tests.conftest import build_rootfs, isobench

DATA = Path(__file__).parent / "data" / "rootfs"
PACKAGES = ("hello", "netbase")  # small: the build stays well under a minute


@pytest.fixture
def inproc(monkeypatch, capsys):
    """The same through bench.cli.main in this process (no 2 s interpreter start per
    call): its exit status, standard output and standard error."""
    from bench import cli

    def call(*args, cache: Path):
        monkeypatch.setenv("ISOBENCH_CACHE", str(cache))
        monkeypatch.setattr(sys, "argv", ["isobench", "rootfs", *args])
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            cli.main()
        out = capsys.readouterr()
        return SimpleNamespace(returncode=e.value.code, stdout=out.out, stderr=out.err)

    return call


def one_line_error(res, message: str) -> None:
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("isobench: error:"), res.stderr
    assert message in lines[-1], res.stderr


def missing(why: str) -> None:
    """Skip; in CI (CI=true) a missing capability is a failure (as conftest's marks)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI=true: a missing capability fails)", pytrace=False)
    pytest.skip(why)


def need(*tools: str) -> None:
    if os.geteuid() != 0:
        missing("needs root")
    if absent := [t for t in tools if not shutil.which(t)]:
        missing(f"needs {', '.join(absent)} (apt-get install mmdebstrap e2fsprogs)")


def need_engine(engine: str) -> None:
    ok = shutil.which(engine) is not None
    if ok:
        ok = subprocess.run([engine, "info"], capture_output=True, timeout=60).returncode == 0
    if not ok:
        missing(f"{engine} is not installed or not answering ({engine} info)")


# ------------------------------------------------------------------ pure


def test_indextargets_recorded_gives_the_hosts_debian_sources():
    text = (DATA / "indextargets.txt").read_text()
    assert rb.parse_indextargets(text, "bookworm") == [
        "deb http://deb.debian.org/debian/ bookworm main",
        "deb http://deb.debian.org/debian/ bookworm-updates main",
        "deb http://deb.debian.org/debian-security/ bookworm-security main",
    ]
    assert rb.parse_indextargets(text, "trixie") == []


def test_indextargets_skips_sources_translations_and_other_suites():
    block = (
        "MetaKey: {mk}\nURI: x\nRepo-URI: {uri}\nRelease: {rel}\nComponent: {comp}\n"
        "Identifier: {ident}\nTarget-Of: {of}\n"
    )
    text = "\n".join(
        block.format(mk=f"k{i}", uri=u, rel=r, comp=c, ident=i_, of=o)
        for i, (u, r, c, i_, o) in enumerate(
            [
                ("http://m/debian/", "bookworm", "main", "Packages", "deb"),
                ("http://m/debian/", "bookworm", "contrib", "Packages", "deb"),
                ("http://m/debian/", "bookworm", "main", "Translations", "deb"),
                ("http://m/debian/", "bookworm", "main", "Sources", "deb-src"),
                ("https://deb.nodesource.com/node_20.x/", "nodistro", "main", "Packages", "deb"),
                ("http://m/debian/", "bookworm-backports", "main", "Packages", "deb"),
                ("http://m/debian/", "bookworm", "main", "Packages", "deb"),  # i386 too: once
            ]
        )
    )
    assert rb.parse_indextargets(text, "bookworm") == [
        "deb http://m/debian/ bookworm main",
        "deb http://m/debian/ bookworm contrib",
        "deb http://m/debian/ bookworm-backports main",
    ]


def test_host_suite_from_os_release():
    assert rb.host_suite("ID=debian\nVERSION_CODENAME=bookworm\n") == "bookworm"
    with pytest.raises(rf.RootfsError, match="needs a Debian host"):
        rb.host_suite("ID=ubuntu\nVERSION_CODENAME=noble\n")
    with pytest.raises(rf.RootfsError, match="needs a Debian host"):
        rb.host_suite("ID=debian\n")  # sid without a codename


def test_dpkg_query_keeps_installed_packages_sorted():
    text = "ii \thello\t2.10-3\tamd64\nrc \told\t1.0\tamd64\nii \tbase-files\t12.4\tamd64\n"
    assert rf.parse_dpkg_query(text) == [
        ["base-files", "12.4", "amd64"],
        ["hello", "2.10-3", "amd64"],
    ]


@pytest.mark.parametrize(
    "spec, message",
    [
        ("nocolon", "expected SRC:DEST"),
        ("x:relative/path", "expected SRC:DEST"),
        ("x:/", "DEST must name a path below /"),
        ("x:/opt/../etc", "without . or .."),
        ("/nonexistent-isobench-src:/opt/x", "does not exist"),
    ],
)
def test_parse_copy_refuses(spec, message):
    with pytest.raises(rf.RootfsError, match=message.replace(".", r"\.")):
        rb.parse_copy(spec)


def test_parse_copy_splits_at_the_last_colon(tmp_path):
    src = tmp_path / "a:b"
    src.write_text("x")
    c = rb.parse_copy(f"{src}:/opt//x/")
    assert c.src == src and c.dest == "/opt/x"


@pytest.mark.parametrize("name", ["", "Upper", "-x", "a/b", "a b", "x" * 64])
def test_bad_names(name):
    with pytest.raises(rf.RootfsError, match="rootfs name"):
        rf.check_name(name)


def test_packages_must_be_names():
    for bad in ("-oAPT::x=1", "hello=2.10", "Hello", "a b"):
        with pytest.raises(rf.RootfsError, match="not a Debian package name"):
            rb.check_packages([bad])


def test_pip_needs_pypi_and_refuses_options():
    with pytest.raises(
        rf.RootfsError, match="--pip needs PyPI reachable.*python3-pytest-benchmark"
    ):
        rb.check_pip(["pytest-benchmark"], probe_url="http://127.0.0.1:9/")
    with pytest.raises(rf.RootfsError, match="not an option"):
        rb.check_pip(["--index-url=http://evil"], probe_url="http://127.0.0.1:9/")
    assert rb.check_pip([], probe_url="http://127.0.0.1:9/") == []  # nothing to reach


def test_inside_never_leaves_the_tree(tmp_path):
    tree = tmp_path / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "bin").symlink_to("usr/bin")
    (tree / "etc").mkdir()
    (tree / "etc/abs").symlink_to("/usr/bin")  # absolute: the tree's /usr/bin, not the host's
    (tree / "etc/up").symlink_to("../../../../..")
    (tree / "loop").symlink_to("loop")
    assert rb.inside(tree, "/bin/x") == tree / "usr/bin/x"
    assert rb.inside(tree, "/etc/abs/y") == tree / "usr/bin/y"
    assert rb.inside(tree, "/etc/up/etc") == tree / "etc"
    assert rb.inside(tree, "/../../etc") == tree / "etc"
    with pytest.raises(rf.RootfsError, match="too many symbolic links"):
        rb.inside(tree, "/loop/x")


def test_tree_hash_is_content_not_time(tmp_path):
    a = tmp_path / "a"
    (a / "d").mkdir(parents=True)
    (a / "d/f").write_text("one")
    (a / "l").symlink_to("d/f")
    h = rf.tree_hash(a)
    os.utime(a / "d/f", (1, 1))
    assert rf.tree_hash(a) == h  # mtime is not content
    (a / "d/f").write_text("two")
    h2 = rf.tree_hash(a)
    assert h2 != h
    (a / "d/f").chmod(0o755)
    assert rf.tree_hash(a) != h2  # a mode is
    (a / "l").unlink()
    (a / "l").symlink_to("d")
    h3 = rf.tree_hash(a)
    assert h3 not in (h, h2)
    anyone = rf.tree_hash(a, owners=False)
    os.lchown(a / "d/f", 4242, 4242)
    assert rf.tree_hash(a) != h3  # an owner is content of a tree
    assert rf.tree_hash(a, owners=False) == anyone  # not of what is copied into one
    os.lchown(a / "d/f", 0, 0)
    assert rf.tree_hash(a) == h3


def test_tree_usage_counts_hard_links_once_as_du(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d/a").write_bytes(b"x" * 100_000)
    os.link(tmp_path / "d/a", tmp_path / "d/b")
    (tmp_path / "l").symlink_to("d/a")
    allocated, apparent, inodes = rf.tree_usage(tmp_path)
    du = subprocess.run(["du", "-s", "-B1", "-x", str(tmp_path)], capture_output=True, text=True)
    assert allocated == int(du.stdout.split()[0])
    assert inodes == 4  # the top, d, a (= b), l
    assert apparent >= 100_000


def test_ext4_geometry():
    kib, inodes = rf.ext4_geometry({"allocated": 100 * 2**20, "inodes": 5000}, 256)
    assert kib == 125 * 1024 + 16 * 1024 + 256 * 1024
    assert inodes == 14096


def test_mke2fs_argv_sizes_the_image_and_names_a_uuid_only_when_given():
    usage = {"allocated": 100 * 2**20, "inodes": 5000}
    kib = 125 * 1024 + 16 * 1024 + 256 * 1024
    argv = rf.mke2fs_argv(Path("/t"), Path("/d.ext4"), usage, 256, "root", uuid="u-1")
    assert argv == [
        *("mke2fs", "-q", "-F", "-t", "ext4", "-d", "/t", "-L", "root", "-U", "u-1"),
        *("-N", "14096", "-m", "0", "-E", "root_owner=0:0", "/d.ext4", f"{kib}k"),
    ]
    plain = rf.mke2fs_argv(
        Path("/t"), Path("/d"), usage, 256, "root", extended="x=1", mke2fs="/sbin/mke2fs"
    )
    assert plain[0] == "/sbin/mke2fs" and "-U" not in plain
    assert plain[plain.index("-E") + 1] == "x=1"


def test_image_name():
    assert ri.image_name("debian:bookworm") == "debian-bookworm"
    assert ri.image_name("registry.example:5000/team/App:1.2@sha256:ab") == "app-1.2"


def test_sweep_removes_only_dead_builds(tmp_path):
    store = tmp_path / "rootfs"
    dead = store / ".building-dead"
    alive = store / ".building-alive"
    fresh = store / ".building-fresh"  # just made, its marker not written yet
    old = store / ".building-old"  # unmarked for longer than the grace
    foreign = store / "0123456789abcdef"
    for d in (dead, alive, fresh, old, foreign):
        d.mkdir(parents=True)
    (dead / ".isobench-scratch").write_text(json.dumps({"pid": 2**22 + 7, "boot_id": "x"}))
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    (alive / ".isobench-scratch").write_text(json.dumps({"pid": os.getpid(), "boot_id": boot}))
    past = time.time() - rf.UNMARKED_GRACE_S - 60
    os.utime(old, (past, past))
    assert sorted(rf.sweep(store)) == sorted([dead, old])
    assert alive.is_dir() and fresh.is_dir() and foreign.is_dir()


def test_make_or_reuse_makes_once_reuses_the_same_and_refuses_another(tmp_path):
    from bench.rootfs._common import make_or_reuse

    said, made = [], []

    def make(tmp: Path) -> dict:
        made.append(tmp)
        (tmp / "tree").mkdir()
        (tmp / "tree" / "f").write_text("x")
        return {"key": "0123456789abcdef", "source": "test", "v": 1}

    def get(same):
        return make_or_reuse("t", tmp_path, said.append, make, same, "same v", " other v")

    first = get(lambda record: False)  # nothing called t yet: made, whatever `same` says
    assert first.key == "0123456789abcdef" and (first.tree / "f").read_text() == "x"
    assert len(made) == 1 and not made[0].exists() and said == []
    assert rf.load("t", tmp_path).root == first.root
    again = get(lambda record: record["v"] == 1)
    assert again.root == first.root and len(made) == 1
    assert said == ["rootfs t exists (0123456789abcdef), same v"]
    with pytest.raises(rf.RootfsError, match=r"^rootfs t exists \(0123456789abcdef\) other v$"):
        get(lambda record: False)
    assert len(made) == 1 and not list(rf.store_dir(tmp_path).glob(".building-*"))


# ------------------------------------------------------------------ a real build


@pytest.fixture(scope="session")
def built(tmp_path_factory):
    """One real build for the session: hello and netbase, plus a copied directory."""
    need("mmdebstrap", "unshare", "chroot", "mke2fs", "e2fsck")
    cache = tmp_path_factory.mktemp("rootfs-cache")
    src = tmp_path_factory.mktemp("copy-src")
    (src / "sub").mkdir()
    (src / "sub/data.txt").write_text("same bytes everywhere\n")
    (src / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (src / "run.sh").chmod(0o755)
    recipe = [*(f"--package={p}" for p in PACKAGES), "--copy", f"{src}:/opt/t"]
    t0 = time.monotonic()
    rootfs = build_rootfs("t1", *recipe, cache=cache)
    yield {
        "cache": cache,
        "src": src,
        "args": ["build", "t1", *recipe],
        "seconds": time.monotonic() - t0,
        "rootfs": rootfs,
    }
    shutil.rmtree(cache, ignore_errors=True)


def test_build_record(built):
    r = built["rootfs"]
    rec = r.record
    assert rec["source"] == "build" and len(r.key) == 16 and r.root.name == r.key
    names = {p[0]: p[1] for p in rec["packages"]}
    assert set(PACKAGES) <= set(names) and "apt" in names and "dpkg" in names
    want = subprocess.run(
        ["dpkg-query", f"--admindir={r.tree}/var/lib/dpkg", "-W", "-f", "${Version}", "hello"],
        capture_output=True,
        text=True,
    )
    assert names["hello"] == want.stdout
    recipe = rec["recipe"]
    assert recipe["suite"] == rb.host_suite() and recipe["packages"] == sorted(PACKAGES)
    assert recipe["releases"] and all(len(h) == 64 for h in recipe["releases"].values())
    assert recipe["copies"][0]["dest"] == "/opt/t"
    assert recipe["copies"][0]["hash"] == rf.tree_hash(built["src"], owners=False)
    assert "src" not in recipe["copies"][0] and rec["copied_from"] == {"/opt/t": str(built["src"])}
    du = subprocess.run(["du", "-s", "-B1", "-x", str(r.tree)], capture_output=True, text=True)
    assert rec["size"]["allocated"] == int(du.stdout.split()[0])
    assert rec["content"] == rf.tree_hash(r.tree)
    assert not list((r.tree / "var/lib/apt/lists").glob("*Release"))  # dropped after reading
    assert not list(r.root.parent.glob(".building-*"))


def test_built_tree_runs_its_binaries_and_has_the_copies(built):
    r = built["rootfs"]
    out = subprocess.run(["chroot", str(r.tree), "hello"], capture_output=True, text=True)
    assert out.stdout.strip() == "Hello, world!"
    out = subprocess.run(["chroot", str(r.tree), "/opt/t/run.sh"], capture_output=True, text=True)
    assert out.stdout == "ran\n"
    assert (r.tree / "opt/t/sub/data.txt").read_text() == "same bytes everywhere\n"


def test_same_recipe_is_the_same_rootfs_at_once(built, inproc):
    t0 = time.monotonic()
    res = inproc(*built["args"], cache=built["cache"])
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - t0 < 20 and "same recipe" in res.stderr
    assert res.stdout.split()[1] == built["rootfs"].key


def test_ls_and_show(built, inproc):
    res = inproc("ls", "--json", cache=built["cache"])
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    row = next(r for r in rows if r["name"] == "t1")
    assert row["hash"] == built["rootfs"].key and row["packages"] > 10
    shown = json.loads(inproc("show", "t1", cache=built["cache"]).stdout)
    assert shown["key"] == built["rootfs"].key and shown["path"] == str(built["rootfs"].tree)


@pytest.mark.parametrize(
    "args, message",
    [
        (["build", "t1", "--package", "hello"], "exists"),  # another recipe under t1
        (["build", "t9", "--package", "no-such-package-isobench"], "unknown to apt"),
        (["build", "t9", "--copy", "/nonexistent-isobench:/opt/x"], "does not exist"),
        (["build", "Bad/Name"], "rootfs name"),
        (["build", "t9", "--pip", "--extra-index-url=x"], "not an option"),
        (["rm", "nothing-here"], "no rootfs named nothing-here"),
        (["show", "nothing-here"], "no rootfs named nothing-here"),
        (["import", "isobench-no-such-image:1", "--name", "t9"], "no image"),
    ],
)
def test_bad_input_one_line_exit_2(built, inproc, args, message):
    t0 = time.monotonic()
    res = inproc(*args, cache=built["cache"])
    one_line_error(res, message)
    assert time.monotonic() - t0 < 60  # refused before any build


def test_tar_imports_into_docker_and_runs(built):
    need_engine("docker")
    r = built["rootfs"]
    tar = r.tar_file()
    assert tar == r.tar_file()  # made once
    tag = f"isobench-test-rootfs:{secrets.token_hex(4)}"
    try:
        imp = subprocess.run(
            ["docker", "import", "--change", "LABEL isobench=1", str(tar), tag],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert imp.returncode == 0, imp.stderr
        run = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", tag, "/bin/true"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        run = subprocess.run(
            ["docker", "run", "--rm", "--network", "none", tag, "hello"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.stdout.strip() == "Hello, world!"
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)


def test_tar_stream_imports_into_podman_and_back(built, inproc):
    need_engine("podman")
    tag = f"localhost/isobench-test-rootfs:{secrets.token_hex(4)}"
    try:
        with built["rootfs"].tar_stream() as stream:
            imp = subprocess.run(
                ["podman", "import", "-", tag],
                stdin=stream,
                capture_output=True,
                text=True,
                timeout=300,
            )
        assert imp.returncode == 0, imp.stderr
        run = subprocess.run(
            # as bench/envs/podman.py runs it: runc (crun refuses hybrid cgroups), limits
            # below any host's hard limits (podman's own defaults exceed some)
            [
                "podman",
                "--runtime",
                "runc",
                "run",
                "--rm",
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
                "--network",
                "none",
                tag,
                "/bin/true",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        back = inproc("import", tag, "--engine", "podman", "--name", "imp-p", cache=built["cache"])
        assert back.returncode == 0, back.stderr
        imported = rf.load("imp-p", built["cache"])
        assert imported.record["source"] == "podman image"
        assert imported.record["packages"] == built["rootfs"].record["packages"]
        assert inproc("rm", "imp-p", cache=built["cache"]).returncode == 0
        assert not imported.root.exists()
    finally:
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True, timeout=120)
    left = subprocess.run(
        ["podman", "ps", "-aq", "--filter", "name=isobench-rootfs-import"],
        capture_output=True,
        text=True,
    )
    assert left.stdout.strip() == ""


def test_ext4_image_passes_fsck_and_holds_the_tree(built):
    r = built["rootfs"]
    img = r.ext4_image(headroom_mib=64)
    fsck = subprocess.run(["e2fsck", "-f", "-n", str(img)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    cat = subprocess.run(
        ["debugfs", "-R", "cat /opt/t/sub/data.txt", str(img)], capture_output=True, text=True
    )
    assert cat.stdout == "same bytes everywhere\n"
    st = subprocess.run(
        ["debugfs", "-R", "stat /usr/bin/hello", str(img)], capture_output=True, text=True
    )
    assert "User:     0" in st.stdout and "Mode:  0755" in st.stdout
    df = subprocess.run(["dumpe2fs", "-h", str(img)], capture_output=True, text=True)
    fields = dict(ln.split(":", 1) for ln in df.stdout.splitlines() if ":" in ln)
    free = int(fields["Free blocks"]) * int(fields["Block size"])
    assert free >= 64 * 2**20  # the headroom asked for


def test_import_image_round_trip(built, inproc):
    need_engine("docker")
    r = built["rootfs"]
    cache = built["cache"]
    tag = f"isobench-test-import:{secrets.token_hex(4)}"
    subprocess.run(
        ["docker", "import", "--change", "LABEL isobench=1", str(r.tar_file()), tag],
        capture_output=True,
        check=True,
        timeout=300,
    )
    try:
        # as a user runs it
        a = isobench("rootfs", "import", tag, "--name", "imp-a", cache=cache, timeout=900)
        assert a.returncode == 0, a.stderr
        b = inproc("import", tag, "--name", "imp-b", cache=cache)
        assert b.returncode == 0, b.stderr
        ia, ib = rf.load("imp-a", cache), rf.load("imp-b", cache)
        assert ia.key == ib.key and ia.root == ib.root  # the content hash: one tree
        assert ia.record["packages"] == r.record["packages"]  # dpkg inside, as built
        assert ia.record["image"]["id"].startswith("sha256:")
        assert (ia.tree / "opt/t/sub/data.txt").read_text() == "same bytes everywhere\n"
        leftover = subprocess.run(
            ["docker", "ps", "-aq", "--filter", "name=isobench-rootfs-import"],
            capture_output=True,
            text=True,
        )
        assert leftover.stdout.strip() == ""
        assert inproc("rm", "imp-a", cache=cache).returncode == 0
        assert ib.root.is_dir()  # still named imp-b
        assert inproc("rm", "imp-b", cache=cache).returncode == 0
        assert not ib.root.exists()
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True, timeout=120)


def test_ctrl_c_during_build_leaves_nothing(built, tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "ISOBENCH_CACHE": str(cache)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.cli", "rootfs", "build", "tint", "--package", "hello"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        store = cache / "rootfs"
        while time.monotonic() < deadline:  # until mmdebstrap has started filling the tree
            trees = list(store.glob(".building-*/tree/var"))
            if trees:
                break
            time.sleep(0.2)
        assert trees, "the build never started"
        time.sleep(2)
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + signal.SIGINT, err
    assert "nothing was kept" in err and "Traceback" not in err
    assert not list(store.glob(".building-*")) and not (store / "names").exists()
    assert str(cache) not in Path("/proc/self/mountinfo").read_text()
    ps = subprocess.run(["pgrep", "-f", str(cache)], capture_output=True, text=True)
    assert ps.stdout.strip() == ""  # no mmdebstrap, apt or dpkg left working on it


def test_build_time(built):
    """A session's single build stays small enough for CI."""
    assert built["seconds"] < 300
