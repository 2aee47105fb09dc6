"""User workloads (issue 16): the userrun probe, the reading of its output, and a real
pytest-benchmark suite run on the host, inside docker and inside a guest from a rootfs
built from Debian's packages, with the bad inputs (no benchmark, a failing benchmark, a
command whose output does not parse) as failed cells with their reasons while the run
goes on."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench import parsers
from bench import rootfs as rf
from bench.envs import image as img
from bench.envs.base import Launch
from bench.families.userrun import Output, judge, read_launch, reassemble
from bench.matrix import UserWorkload

NAME = "userwork-test"
QUICK = ["--benchmark-min-rounds=3", "--benchmark-max-time=0.05", "--benchmark-warmup=off"]
DATA = Path(__file__).parent / "data" / "parsers"
SUITE = UserWorkload("suite", "pytest-benchmark", "pytest-benchmark", "/opt/s")
SYSBENCH = UserWorkload("sb", "command", "sysbench", argv=("sysbench", "cpu", "run"))


def userrun(bundle, *args: str, cwd: Path | None = None) -> list[dict]:
    """The bundle's userrun probe, run here: its records after `ready`."""
    res = subprocess.run(
        [str(bundle.probes["userrun"]), *args], capture_output=True, text=True, timeout=60, cwd=cwd
    )
    assert res.returncode == 0, res.stderr
    first, *lines = res.stdout.splitlines()
    assert first == "ready"
    assert all(len(line) < 3000 for line in lines)  # short lines for every reader
    return [json.loads(line) for line in lines]


# ------------------------------------------------------------------ the userrun probe


@pytest.mark.requires("compiler")
def test_userrun_hands_back_stdout_the_out_file_and_the_exit_status(bundle, tmp_path):
    script = tmp_path / "s.py"
    script.write_text(
        "import os, sys\n"
        "sys.stdout.write('é' * 5000 + 'end\\n')\n"  # several chunks, not ASCII
        "sys.stderr.write('x' * 6000 + 'last words\\n')\n"
        "open(sys.argv[1], 'w').write(os.getcwd() + ' ' + os.environ['LANG'] + ' '"
        " + str('HARNESS_ONLY' in os.environ) + ' ' + sys.argv[1])\n"
        "sys.exit(3)\n"
    )
    env = {**os.environ, "HARNESS_ONLY": "1"}
    res = subprocess.run(
        [
            str(bundle.probes["userrun"]),
            "--cd",
            str(tmp_path),
            "--out",
            "--",
            sys.executable,
            str(script),
            "{out}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    records = [json.loads(line) for line in res.stdout.splitlines()[1:]]
    out = reassemble(records)
    assert out.stdout == "é" * 5000 + "end\n"
    cwd, lang, leaked, path = out.file.split()
    assert (cwd, lang, leaked) == (str(tmp_path), "C.UTF-8", "False")  # a fixed environment
    assert path.startswith("/tmp/isobench-userrun-") and not Path(path).parent.exists()
    assert out.stderr.endswith("last words\n") and len(out.stderr.encode()) == 4096
    assert out.status == 3 and out.truncated == ["stderr"]


@pytest.mark.requires("compiler")
def test_userrun_says_why_a_command_could_not_run(bundle):
    out = reassemble(userrun(bundle, "--", "no-such-command-here"))
    assert out.status == 127 and out.file is None
    v = judge(SYSBENCH, out, ["no-such-command-here"])
    assert v.parsed is None
    assert v.reason == "cannot run no-such-command-here: No such file or directory"


# ------------------------------------------------------------------ reading the output (pure)


def test_a_failing_benchmark_is_a_failed_op_next_to_the_others():
    stdout = (
        "test_a.py .F\n"
        "=========================== short test summary info ===========================\n"
        "FAILED test_a.py::test_broken - ZeroDivisionError: division by zero\n"
        "========================= 1 failed, 1 passed in 0.52s =========================\n"
    )
    out = Output(stdout=stdout, file=(DATA / "pytest-benchmark.json").read_text(), status=1)
    v = judge(SUITE, out, [])
    assert v.reason == "" and v.parsed is not None and v.parsed.figures
    assert v.failed_ops == [
        (
            "test_a.py::test_broken",
            "benchmark test_a.py::test_broken failed: ZeroDivisionError: division by zero",
        ),
    ]


def test_no_benchmark_and_unparsable_output_fail_the_cell_with_the_parsers_reason():
    empty = Output(stdout="1 passed, 1 skipped\n", file="", status=0)
    assert "no benchmark ran" in judge(SUITE, empty, []).reason
    nothing = Output(stdout="no tests ran in 0.01s\n", status=5)
    assert judge(SUITE, nothing, []).reason == "no benchmarks: pytest collected no tests in /opt/s"
    usage = Output(stderr="pytest: error: unrecognized arguments: --benchmark-only\n", status=4)
    assert judge(SUITE, usage, []).reason == (
        "pytest exited with status 4: pytest: error: unrecognized arguments: --benchmark-only"
    )
    broken = Output(
        stdout="ERROR test_x.py - ModuleNotFoundError: No module named 'numpy'\n"
        "=== 1 error in 0.12s ===\n",
        status=2,
    )
    assert judge(SUITE, broken, []).reason == (
        "pytest exited with status 2: test_x.py errored: "
        "ModuleNotFoundError: No module named 'numpy'"
    )
    garbled = Output(stdout="Segmentation fault\n", status=0)
    with pytest.raises(parsers.ParseError) as e:
        parsers.parse("sysbench", garbled.stdout, SYSBENCH.argv)
    assert judge(SYSBENCH, garbled, list(SYSBENCH.argv)).reason == str(e.value)
    crashed = Output(stderr="FATAL: bad option\n", status=1)
    assert judge(SYSBENCH, crashed, ["sysbench"]).reason == (
        "sysbench exited with status 1: FATAL: bad option"
    )


def test_each_pytest_round_is_a_figure_and_the_kept_json_names_the_environment(tmp_path):
    text = (DATA / "pytest-benchmark.json").read_text()
    chunks = [
        {
            "probe": "userrun",
            "op": "chunk",
            "stream": "file",
            "seq": i,
            "b64": base64.b64encode(text[i * 1000 : (i + 1) * 1000].encode()).decode(),
        }
        for i in range(len(text) // 1000 + 1)
    ]
    chunks.append(
        {
            "probe": "userrun",
            "op": "exit",
            "metrics": {"exit_status": 0},
            "file": True,
            "elapsed_ns": 1,
        }
    )
    launch = read_launch(
        Launch(records=chunks[::-1]),
        SUITE,
        SUITE.probe_args(quick=True),
        tmp_path / "raw" / "suite" / "host-r1-1",
        {"env": "host"},
    )
    doc = json.loads(text)
    want = [(b["fullname"], s * 1e9) for b in doc["benchmarks"] for s in b["stats"]["data"]]
    assert [(r["op"], r["metrics"]["ns_per_call"]) for r in launch.records] == want
    kept = json.loads((tmp_path / "raw" / "suite" / "host-r1-1.json").read_text())
    assert kept["machine_info"]["isobench"] == {"env": "host"}
    assert {b["extra_info"]["isobench_env"] for b in kept["benchmarks"]} == {"host"}
    assert kept["benchmarks"][0]["stats"] == doc["benchmarks"][0]["stats"]


# ------------------------------------------------------------------ a real run from a rootfs

GOOD = """
import os


def calls():
    for _ in range(200):
        os.getppid()


def compute():
    x = 1
    for i in range(2000):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
    return x


def test_getppid(benchmark):
    benchmark(calls)


def test_compute(benchmark):
    benchmark(compute)
"""
FAILING = """
def test_fine(benchmark):
    benchmark(sum, range(100))


def test_broken(benchmark):
    benchmark(lambda: 1 / 0)
"""
PLAIN = "def test_plain():\n    assert True\n"  # a test, but no benchmark


def missing(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{why} (CI=true: a missing capability fails)", pytrace=False)
    pytest.skip(why)


def isobench(*args, cache: Path, cwd: Path, timeout=600):
    env = {
        **os.environ,
        "ISOBENCH_CACHE": str(cache),
        "ISOBENCH_LOCK": str(cwd / "lock"),
        "PYTHONPATH": str(Path(__file__).parents[1]),
    }
    return subprocess.run(
        [sys.executable, "-m", "bench.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=cwd,
    )


@pytest.fixture(scope="session")
def suites_rootfs(tmp_path_factory, bundle):
    """python3-pytest-benchmark from Debian and three suites, in a cache of its own (the
    session's bundle copied in: the same bytes, not compiled again); its docker image and
    the cache are removed at the end."""
    if os.geteuid() != 0:
        missing("needs root")
    if not shutil.which("mmdebstrap"):
        missing("needs mmdebstrap (apt-get install mmdebstrap)")
    cache = tmp_path_factory.mktemp("userwork-cache")
    shutil.copytree(bundle.root, cache / "bundles" / bundle.hash, symlinks=True)
    src = tmp_path_factory.mktemp("suites")
    for name, text in (("good", GOOD), ("failing", FAILING), ("plain", PLAIN)):
        (src / name).mkdir()
        (src / name / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
        (src / name / f"test_{name}.py").write_text(text)
    work = tmp_path_factory.mktemp("userwork")
    res = isobench(
        "rootfs",
        "build",
        NAME,
        "--package",
        "python3-pytest-benchmark",
        "--copy",
        f"{src}:/opt/suites",
        cache=cache,
        cwd=work,
    )
    assert res.returncode == 0, res.stderr
    tree = rf.load(NAME, cache)
    yield cache, tree
    images = subprocess.run(
        [
            "docker",
            "images",
            "-q",
            "--no-trunc",
            "--filter",
            f"label={img.ROOTFS_LABEL}={tree.key}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout.split()
    for image in set(images):
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True, timeout=120)
    shutil.rmtree(cache, ignore_errors=True)


MATRIX = f"""
rootfs = "{NAME}"
baseline = "host"

[[user_workload]]
name = "suite"
kind = "pytest-benchmark"
dir = "/opt/suites/good"
quick_args = {json.dumps(QUICK)}

[[user_workload]]
name = "failing"
kind = "pytest-benchmark"
dir = "/opt/suites/failing"
quick_args = {json.dumps(QUICK)}

[[user_workload]]
name = "nobench"
kind = "pytest-benchmark"
dir = "/opt/suites/plain"

[[user_workload]]
name = "garbled"
kind = "command"
argv = ["python3", "-c", "print('this is no sysbench output')"]
parser = "sysbench"

[[env]]
kind = "host"

[[env]]
kind = "docker"
label = "docker"
"""


@pytest.mark.requires("host", "docker")
def test_a_pytest_benchmark_suite_runs_on_the_host_and_in_docker_from_one_rootfs(
    suites_rootfs, tmp_path
):
    cache, tree = suites_rootfs
    (tmp_path / "m.toml").write_text(MATRIX)
    res = isobench(
        "run",
        "m.toml",
        "--quick",
        "--rounds",
        "1",
        "--max-rounds",
        "1",
        "--warmup",
        "0",
        "--results",
        "r",
        "--report",
        cache=cache,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = (tmp_path / "r").iterdir()
    samples = [json.loads(ln) for ln in (run / "samples.jsonl").read_text().splitlines()]
    manifest = json.loads((run / "manifest.json").read_text())
    for env in ("host", "docker"):
        assert manifest["environments"][env]["rootfs"]["key"] == tree.key
        mine = [s for s in samples if s["env"] == env and s["source"] == "probe"]
        ok = [s for s in mine if s["status"] == "ok"]
        # every benchmark an op by its pytest name, a figure per pytest round (stats.data)
        kept = json.loads(next((run / "raw" / "suite").glob(f"{env}-r1-*.json")).read_text())
        assert kept["machine_info"]["isobench"]["env"] == env
        assert kept["machine_info"]["isobench"]["rootfs"] == tree.key
        for b in kept["benchmarks"]:
            got = [s["value"] for s in ok if s["workload"] == "suite" and s["op"] == b["fullname"]]
            assert got == pytest.approx([x * 1e9 for x in b["stats"]["data"]]) and len(got) >= 3
        assert {s["op"] for s in ok if s["workload"] == "suite"} == {
            "test_good.py::test_getppid",
            "test_good.py::test_compute",
        }
        # a failing benchmark: a failed op, the other one measured
        assert {s["op"] for s in ok if s["workload"] == "failing"} == {"test_failing.py::test_fine"}
        (broken,) = [s for s in mine if s["workload"] == "failing" and s["status"] == "failed"]
        assert broken["op"] == "test_failing.py::test_broken"
        assert broken["reason"].startswith("benchmark test_failing.py::test_broken failed")
        # no benchmark, output that does not parse: failed cells with the parser's reason
        failed = {
            s["workload"]: s["reason"]
            for s in samples
            if s["env"] == env and s["source"] == "launch"
        }
        assert set(failed) == {"nobench", "garbled"}
        assert "no benchmark ran" in failed["nobench"]
        assert failed["garbled"].startswith("sysbench: which test ran?")
    # pytest-benchmark's own tools read the kept files
    cmp = subprocess.run(
        [
            sys.executable,
            "-c",
            "from pytest_benchmark.cli import main; main()",
            "compare",
            "--columns=median",
            "--name=long",
            *map(str, sorted((run / "raw" / "suite").glob("*.json"))),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    rows = [ln for ln in cmp.stdout.splitlines() if ln.startswith("test_good.py::test_getppid (")]
    assert cmp.returncode == 0 and len(rows) == 2 and "docker-r1-" in "".join(rows), cmp.stdout
    summary = isobench("summary", str(run), cache=cache, cwd=tmp_path)
    assert summary.returncode == 0 and "suite · test_good.py::test_compute" in summary.stdout
    report = (run / "report.html").read_text()
    section = report[report.index('<section id="user">') :]
    section = section[: section.index("</section>")]
    assert "test_good.py::test_getppid" in section and "test_failing.py::test_broken" in section


GUEST_MATRIX = f"""
rootfs = "{NAME}"
baseline = "host"

[[user_workload]]
name = "suite"
kind = "pytest-benchmark"
dir = "/opt/suites/good"
quick_args = {json.dumps(QUICK)}

[[env]]
kind = "host"

[[env]]
kind = "qemu"
label = "guest"
accel = "tcg"
memory = "1g"
kernel = "KERNEL"
"""


@pytest.mark.requires("host", "qemu")
def test_the_same_suite_runs_inside_a_guest_booted_from_the_rootfs(suites_rootfs, tmp_path):
    """The suite in a QEMU guest (TCG here) whose root is the rootfs's disk: python3 and
    pytest-benchmark of the tree, its benchmarks by their pytest names, labelled emulated."""
    from bench.envs.guest import kernel

    cache, tree = suites_rootfs
    guest_kernel = str(kernel.find_kernel().path)  # the normal cache's, not the tree's
    (tmp_path / "m.toml").write_text(GUEST_MATRIX.replace("KERNEL", guest_kernel))
    res = isobench(
        "run",
        "m.toml",
        "--quick",
        "--rounds",
        "1",
        "--max-rounds",
        "1",
        "--warmup",
        "0",
        "--results",
        "r",
        cache=cache,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = (tmp_path / "r").iterdir()
    samples = [json.loads(ln) for ln in (run / "samples.jsonl").read_text().splitlines()]
    guest = json.loads((run / "manifest.json").read_text())["environments"]["guest"]
    assert guest["emulated"] and guest["rootfs"]["key"] == tree.key
    assert guest["root_disk"]["rootfs"] == tree.key
    ok = [
        s
        for s in samples
        if s["env"] == "guest"
        and s["source"] == "probe"
        and s["status"] == "ok"
        and s["workload"] == "suite"
    ]
    kept = json.loads(next((run / "raw" / "suite").glob("guest-r1-*.json")).read_text())
    assert kept["machine_info"]["isobench"]["env"] == "guest"
    for b in kept["benchmarks"]:
        got = [s["value"] for s in ok if s["op"] == b["fullname"]]
        assert got == pytest.approx([x * 1e9 for x in b["stats"]["data"]]) and len(got) >= 3
    assert {s["op"] for s in ok} == {"test_good.py::test_getppid", "test_good.py::test_compute"}
