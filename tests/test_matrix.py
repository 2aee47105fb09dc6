"""Matrix files and --env specs: what is accepted, and the one-line errors for the rest."""

import pytest

from bench import catalog
from bench.matrix import QUICK, Matrix, MatrixError, load_toml, parse_env_spec


def test_env_spec_parsing_and_labels():
    e = parse_env_spec("host:cpus=0.5,label=half")
    assert (e.kind, e.options, e.label, e.spec) == ("host", {"cpus": 0.5}, "half", "host:cpus=0.5")
    assert parse_env_spec("namespaces").label == "namespaces"


@pytest.mark.parametrize(
    "spec, message",
    [
        ("dokcer", "unknown environment kind 'dokcer' (did you mean 'docker'?)"),
        ("host:cpu=1", "host has no option 'cpu' (did you mean 'cpus'?)"),
        ("host:cpus=-1", "must be positive"),
        ("host:cpus=many", "expected a float"),
        ("host:cpus", "'cpus' is not key=value"),
        ("docker:seccomp=off", "expected one of default, unconfined"),
        ("host:label=", "label must not be empty"),
    ],
)
def test_bad_env_specs(spec, message):
    with pytest.raises(MatrixError) as e:
        parse_env_spec(spec)
    assert message in str(e.value) and str(e.value).startswith(f"--env {spec}:")


def test_matrix_file_round_trip(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text(
        'seed = 7\nrounds = 3\nworkloads = ["syscall"]\n'
        '[[env]]\nkind = "host"\n[[env]]\nkind = "host"\nlabel = "half"\ncpus = 0.5\n'
    )
    envs, workloads, settings = load_toml(f)
    assert [e.label for e in envs] == ["host", "half"] and envs[1].options == {"cpus": 0.5}
    m = Matrix(envs=envs, workloads=workloads, **settings)
    m.check(catalog.load())
    assert Matrix.from_dict(m.to_dict()) == m


@pytest.mark.parametrize(
    "text, message",
    [
        ("rounds = [", "not valid TOML"),
        ("roundz = 3", "unknown key 'roundz' (did you mean 'rounds'?)"),
        ('rounds = "three"', "key 'rounds' must be a int"),
        ("rounds = true", "key 'rounds' must be a int"),
        ("[[env]]\nlabel = 'x'", "env[0]: missing key 'kind'"),
        ("[[env]]\nkind = 'host'\ncpus = [1]", "option 'cpus' must be a single value"),
        ('workloads = "syscall"', "'workloads' must be a list"),
    ],
)
def test_bad_matrix_files_name_file_and_key(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(MatrixError) as e:
        load_toml(f)
    assert str(e.value).startswith(str(f)) and message in str(e.value)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"rounds": -1}, "rounds must be at least 1"),
        ({"warmup": -2}, "warmup must be 0 or more"),
        ({"timeout": 0}, "timeout must be positive"),
        ({"workloads": ["sycall"]}, "unknown workload 'sycall' (did you mean 'syscall'?)"),
        ({"envs": []}, "no environments"),
    ],
)
def test_matrix_check(change, message):
    args = {"envs": [parse_env_spec("host")], "workloads": ["syscall"], **change}
    with pytest.raises(MatrixError) as e:
        Matrix(**args).check(catalog.load(), "m.toml")
    assert str(e.value) == f"m.toml: {message}" or message in str(e.value)


def test_duplicate_labels_are_refused():
    m = Matrix(envs=[parse_env_spec("host"), parse_env_spec("host")], workloads=["syscall"])
    with pytest.raises(MatrixError, match="label 'host' is used twice"):
        m.check(catalog.load())


def test_the_quick_budget_is_told_apart_from_a_given_one():
    """--quick's budget is a default (a quick density run may outgrow it); the same
    figure given as --budget or in a file is the run's wall clock. Kept through the
    manifest, so a resumed run keeps its rule."""
    envs = [parse_env_spec("host")]
    quick = Matrix(envs=envs, workloads=["density"], quick=True, **QUICK)
    given = Matrix(envs=envs, workloads=["density"], quick=True, **{**QUICK, "budget": 285.0})
    assert quick.budget == given.budget == 285.0 and type(quick.budget) is float
    assert quick.budget_from_quick and not given.budget_from_quick
    assert not Matrix(envs=envs, workloads=["syscall"]).budget_from_quick
    for m in (quick, given):
        assert Matrix.from_dict(m.to_dict()) == m
    old = {k: v for k, v in quick.to_dict().items() if k != "budget_from_quick"}
    assert not Matrix.from_dict(old).budget_from_quick  # a run made before: a fixed budget


# ------------------------------------------------------------------ user workloads (issue 16)

SUITE = '[[user_workload]]\nname = "suite"\nkind = "pytest-benchmark"\ndir = "/opt/bench"\n'
CMD = '[[user_workload]]\nname = "s"\nkind = "command"\n'
REDIS = '[[user_workload]]\nname = "r"\nkind = "command"\nparser = "redis-benchmark"\n'
SERVER = 'server = ["redis-server", "--port", "{port}"]\n'


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '[[user_workload]]\nname = "x"\nkind = "pytest_benchmark"',
            "unknown kind "
            "'pytest_benchmark' (did you "
            "mean 'pytest-benchmark'?); known: pytest-benchmark, command",
        ),
        (
            SUITE + 'arg = ["-x"]',
            "(suite): a pytest-benchmark workload has no key 'arg' (did you "
            "mean 'args'?); its keys: args, dir, kind, name, quick_args",
        ),
        (
            CMD + 'argv = ["sysbench"]\nparser = "sysbench2"',
            "(s): unknown parser 'sysbench2' (did you mean 'sysbench'?); known: sysbench, fio, "
            "redis-benchmark, wrk",
        ),
        (
            CMD + 'argv = ["x"]\nparser = "pytest-benchmark"',
            "unknown parser 'pytest-benchmark' (a suite is kind = \"pytest-benchmark\")",
        ),
        (
            CMD + 'argv = "sysbench cpu"\nparser = "sysbench"',
            "(s): 'argv' must be a list of strings",
        ),
        (CMD + 'argv = []\nparser = "sysbench"', "(s): 'argv' must not be empty"),
        (CMD + 'argv = ["x"]', "missing key 'parser'"),
        ('[[user_workload]]\nname = "s"\nkind = "pytest-benchmark"', "missing key 'dir'"),
        (SUITE.replace("/opt/bench", "opt/bench"), "dir must be an absolute path"),
        ('[[user_workload]]\nkind = "command"', "user_workload[0]: missing key 'name'"),
        ('[[user_workload]]\nname = "a b"\nkind = "command"', "name must be letters, digits"),
        (SUITE + SUITE, "user workload name 'suite' is used twice"),
        (
            REDIS + 'argv = ["redis-benchmark", "-h", "{host}", "-p", "{port}"]\n'
            'server = ["redis-server"]',
            "(r): 'server' must listen on the port isobench picks: put \"{port}\" in it",
        ),
        (
            REDIS + 'argv = ["redis-benchmark", "-p", "{port}"]\n' + SERVER,
            '(r): \'argv\' is the server\'s client: it must connect to "{host}" and "{port}" '
            "(missing {host})",
        ),
        (
            REDIS + 'argv = ["redis-benchmark", "-h", "{host}", "-p", "{port}"]\n'
            'quick_argv = ["redis-benchmark"]\n' + SERVER,
            "(r): 'quick_argv' is the server's client: it must connect to \"{host}\" and "
            '"{port}" (missing {host} and {port})',
        ),
        (
            REDIS + 'argv = ["redis-benchmark", "-h", "{host}", "-p", "{port}"]\nserver = []',
            "(r): 'server' must not be empty",
        ),
        (
            REDIS + 'argv = ["redis-benchmark", "-h", "{host}", "-p", "{port}"]\n'
            'server = "redis-server --port {port}"',
            "(r): 'server' must be a list of strings",
        ),
        (
            REDIS
            + 'argv = ["redis-benchmark", "-h", "{host}", "-p", "{port}"]\n'
            + SERVER
            + "port = 6379",
            "(r): 'port' is not a key: isobench picks a free port for the server",
        ),
        (SUITE + SERVER, "(suite): a pytest-benchmark workload has no key 'server'"),
        ("rootfs = 3", "key 'rootfs' must be the name of a rootfs"),
        ("user_workload = 3", "'user_workload' must be [[user_workload]] tables"),
    ],
)
def test_bad_user_workloads_are_one_line_errors(tmp_path, text, message):
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(MatrixError) as e:
        load_toml(f)
    assert str(e.value).startswith(str(f)) and message in str(e.value)
    assert "\n" not in str(e.value)


def test_user_workloads_run_alone_and_go_through_the_manifest(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text(
        'rootfs = "tools"\n' + SUITE + 'quick_args = ["--benchmark-max-time=0.1"]\n'
        '[[user_workload]]\nname = "cpu-sb"\nkind = "command"\nparser = "sysbench"\n'
        'argv = ["sysbench", "cpu", "run"]\n[[env]]\nkind = "host"\n'
    )
    envs, workloads, settings = load_toml(f)
    assert workloads == [] and settings["rootfs"] == "tools"
    m = Matrix(envs=envs, workloads=workloads, **settings)
    assert m.workloads == ["suite", "cpu-sb"]
    suite = m.user_workloads[0]
    assert suite.probe_args(quick=True) == (
        "--cd",
        "/opt/bench",
        "--out",
        "--",
        "python3",
        "-m",
        "pytest",
        "--benchmark-only",
        "--benchmark-json={out}",
        "--benchmark-max-time=0.1",
        ".",
    )
    assert suite.probe_args(quick=False)[-2:] == ("--benchmark-json={out}", ".")
    assert m.user_workloads[1].probe_args(quick=True) == (
        "--cd",
        "/",
        "--",
        "sysbench",
        "cpu",
        "run",
    )
    assert Matrix.from_dict(m.to_dict()) == m


@pytest.mark.parametrize(
    "envs, extra, message",
    [
        (
            ["host", "k8s"],
            {"rootfs": "tools"},  # the kind is refused before the name is read
            "environment 'k8s': k8s cannot run from a rootfs yet (rootfs applies to host, "
            "namespaces, docker",
        ),
        (
            ["host"],
            {},
            "user workload 'suite' runs from a rootfs, and environment 'host' names "
            "none: set rootfs = NAME at the top of the matrix, or rootfs=NAME on the environment",
        ),
        (["host"], {"rootfs": "no-such-rootfs-here"}, "rootfs: option rootfs=no-such-rootfs-here"),
    ],
)
def test_a_user_workload_needs_a_rootfs_every_environment_can_run_from(
    tmp_path, monkeypatch, envs, extra, message
):
    monkeypatch.setenv("ISOBENCH_CACHE", str(tmp_path))  # an empty cache: no rootfs in it
    from bench.matrix import UserWorkload

    suite = UserWorkload("suite", "pytest-benchmark", "pytest-benchmark", "/opt/bench")
    m = Matrix(
        envs=[parse_env_spec(e) for e in envs], workloads=[], user_workloads=[suite], **extra
    )
    with pytest.raises(MatrixError) as e:
        m.check(catalog.load(), "m.toml")
    assert str(e.value).startswith("m.toml: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_a_server_command_goes_through_the_manifest(tmp_path):
    f = tmp_path / "m.toml"
    f.write_text(
        REDIS
        + 'argv = ["redis-benchmark", "-h", "{host}", "-p", "{port}", "--csv"]\n'
        + SERVER
        + '[[env]]\nkind = "host"\n'
    )
    envs, workloads, settings = load_toml(f)
    m = Matrix(envs=envs, workloads=workloads, **settings)
    (redis,) = m.user_workloads
    assert redis.server == ("redis-server", "--port", "{port}")
    assert Matrix.from_dict(m.to_dict()) == m
    assert "server redis-server --port {port} held in the environment" in (
        redis.workload().description
    )


def test_a_user_workload_may_not_take_a_catalog_name():
    from bench.matrix import UserWorkload

    clash = UserWorkload("cpu", "command", "sysbench", argv=("sysbench", "cpu", "run"))
    m = Matrix(envs=[parse_env_spec("host")], workloads=[], user_workloads=[clash])
    with pytest.raises(MatrixError, match="user workload 'cpu' has the name of a catalog workload"):
        m.check(catalog.load(), "m.toml")
