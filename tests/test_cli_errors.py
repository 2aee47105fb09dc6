"""Bad input from the command line: one line on stderr, exit status 2, no traceback."""

import pytest

from tests.conftest import isobench


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--env", "dokcer"], "unknown environment kind 'dokcer'"),
        (["run", "--env", "host", "--workload", "sycall"], "unknown workload 'sycall'"),
        (["run", "--env", "host", "--rounds", "-1"], "rounds must be at least 1"),
        (["run", "--env", "host:cpus=x"], "expected a float"),
        (["run", "--precision", "abc"], "--precision abc"),
        (["run", "--bogus"], "No such option"),
        (["summary", "/nonexistent-run"], "no such directory"),
        (["run", "--resume", "/"], "not an isobench run"),
    ],
)
def test_one_line_error_exit_2(args, message):
    res = isobench(*args)
    assert res.returncode == 2, res
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("isobench: error:"), res.stderr
    assert message in lines[0]


def test_malformed_matrix_file(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text("[[env]]\nkind = 'host'\nrounds = 'x'\n")
    res = isobench("run", str(f))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{f}: env[0]: host has no option 'rounds'" in lines[0]


def test_newer_schema_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text('{"schema_version": 99}')
    res = isobench("summary", str(tmp_path))
    assert res.returncode == 2 and "newer isobench" in res.stderr and "Traceback" not in res.stderr


def one_line_error(res, message: str) -> None:
    assert res.returncode == 2, res
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("isobench: error:"), res.stderr
    assert message in lines[0]


@pytest.mark.parametrize("value", ["200%", "2", "0", "-1%", "51%"])
def test_precision_must_be_a_sensible_fraction(value):
    one_line_error(isobench("run", "--env", "host", "--precision", value), "must be in (0, 50%]")


def test_run_help_shows_defaults_and_explains_every_option():
    text = isobench("run", "--help").stdout
    assert "%%" not in text
    for option in ("--workload", "--warmup", "--baseline", "--seed", "--budget"):
        line = next(x for x in text.splitlines() if x.strip().startswith(option))
        assert len(line.split()) > 2, f"{option} has no help"
    flat = " ".join(text.split())
    assert "[default: (10; --quick: 8)]" in flat and "preparation included" in flat


@pytest.mark.requires("docker")
def test_an_unknown_docker_runtime_is_refused_at_input():
    res = isobench("run", "--env", "docker:runtime=runcs", "--workload", "syscall")
    one_line_error(res, "docker has no runtime 'runcs' (the daemon lists runc")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from tests.test_report import make_run

    return make_run(tmp_path_factory)


needs_run = pytest.mark.requires("root", "cgroup", "compiler", "host", "namespaces")
WRITERS = [["report"], ["notebook"], ["export", "--format", "csv"], ["compare", "RUN"]]


@needs_run
@pytest.mark.parametrize("command", WRITERS, ids=lambda c: c[0])
def test_dash_output_writes_to_stdout(run, tmp_path, command):
    args = [str(run) if a == "RUN" else a for a in command]
    res = isobench(args[0], str(run), *args[1:], "-o", "-", cwd=tmp_path)
    assert res.returncode in (0, 1), res.stderr  # compare: 1 on a significant change
    assert not (tmp_path / "-").exists()
    head = {
        "report": "<!DOCTYPE html>",
        "compare": "<!DOCTYPE html>",
        "notebook": "{",
        "export": "run_id,",
    }[command[0]]
    assert res.stdout.lstrip().startswith(head)


@needs_run
@pytest.mark.parametrize("command", WRITERS, ids=lambda c: c[0])
@pytest.mark.parametrize("target", ["/proc/x.out", "FILE/x.out"])
def test_unwritable_output_is_one_line(run, tmp_path, command, target):
    (tmp_path / "file").write_text("")
    target = target.replace("FILE", str(tmp_path / "file"))
    args = [str(run) if a == "RUN" else a for a in command]
    res = isobench(args[0], str(run), *args[1:], "-o", target)
    one_line_error(res, f"cannot write {target}")
    assert "Traceback" not in res.stderr


@needs_run
def test_summary_with_an_unknown_baseline_names_the_known_ones(run):
    one_line_error(
        isobench("summary", str(run), "--baseline", "nosuch"),
        "--baseline nosuch: no such environment (known: host, ",
    )


@needs_run
def test_a_run_without_samples_is_said_so(run, tmp_path):
    (tmp_path / "manifest.json").write_text((run / "manifest.json").read_text())
    one_line_error(isobench("summary", str(tmp_path)), "no samples recorded")


def test_export_format_is_a_choice(tmp_path):
    res = isobench("export", str(tmp_path), "--format", "xml")
    one_line_error(res, "'xml' is not one of 'csv', 'json', 'parquet'")


def test_the_example_matrix_has_every_key_and_passes_the_input_checks():
    from pathlib import Path

    from bench import catalog
    from bench.envs import REGISTRY
    from bench.matrix import SCALARS, Matrix, load_toml

    root = Path(__file__).parents[1]
    envs, workloads, settings = load_toml(root / "examples" / "matrix.toml")
    assert set(settings) == set(SCALARS)
    Matrix(envs=envs, workloads=workloads, **settings).check(catalog.load(), "example")
    assert {e.kind for e in envs} == set(REGISTRY)
    readme = (root / "README.md").read_text()
    for key in SCALARS:  # every matrix key is documented
        assert f"| `{key}` |" in readme, key
    for cls in REGISTRY.values():
        for option in cls.options:
            assert f"`{option}" in readme, (cls.kind, option)


@pytest.mark.requires("docker")
def test_image_push_says_in_one_line_why_it_could_not_push_and_keeps_no_tag():
    """No registry can be reached from here: the push to a closed port fails with the
    daemon's reason, exit 2, and the tag made for it is removed."""
    import docker

    res = isobench("image", "push", "localhost:1/isobench-probes")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "localhost:1/isobench-probes:" in lines[0], res.stderr
    assert "connection refused" in lines[0]
    tags = [t for i in docker.from_env().images.list() for t in i.tags]
    assert not [t for t in tags if t.startswith("localhost:1/")]
    bad = isobench("image", "push", "Bad Name!")
    assert bad.returncode == 2 and "not a repository name" in bad.stderr
