"""The store: fsynced appends, torn-line recovery, schema checks and migrations, typed
manifests, full-disk safety."""

import json
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from bench import manifest, store

V1_RUN = Path(__file__).parent / "data" / "runs" / "v1"  # recorded at schema version 1


def _manifest(run_dir, **kw):
    m = {"schema_version": store.SCHEMA_VERSION, "run_id": "r1", "status": "running", **kw}
    store.write_manifest(run_dir, m)
    return m


def _rec(i, **kw):
    base = {c: None for c in store.COLUMNS}
    fields = {"run_id": "r1", "round": 1, "env": "host", "workload": "syscall", "op": "null"}
    return {**base, **fields, "metric": "ns_per_op", "value": float(i), "status": "ok", **kw}


def test_torn_last_line_is_skipped_and_repaired(tmp_path):
    _manifest(tmp_path)
    w = store.SampleWriter(tmp_path)
    w.append([_rec(1), _rec(2)])
    w.close()
    with open(tmp_path / store.SAMPLES, "a") as f:  # a crash in the middle of a write
        f.write('{"run_id": "r1", "round": 1, "val')
    df = store.load_samples(tmp_path)
    assert list(df["value"]) == [1.0, 2.0]
    w = store.SampleWriter(tmp_path)  # a resumed run appends after the torn line
    w.append([_rec(3)])
    w.close()
    assert list(store.load_samples(tmp_path)["value"]) == [1.0, 2.0, 3.0]
    assert list(store.load_samples(tmp_path).columns) == list(store.COLUMNS)


def test_not_a_run_and_newer_schema_are_refused(tmp_path):
    with pytest.raises(store.StoreError, match="not an isobench run"):
        store.read_manifest(tmp_path)
    with pytest.raises(store.StoreError, match="no such directory"):
        store.read_manifest(tmp_path / "missing")
    (tmp_path / store.MANIFEST).write_text("{not json")
    with pytest.raises(store.StoreError, match="not valid JSON"):
        store.read_manifest(tmp_path)
    newer = store.SCHEMA_VERSION + 1
    (tmp_path / store.MANIFEST).write_text(json.dumps({"schema_version": newer, "x": 1}))
    with pytest.raises(store.StoreError) as e:
        store.read_manifest(tmp_path)
    assert str(e.value) == (
        f"{tmp_path / store.MANIFEST}: written by a newer isobench (schema {newer}, this one "
        f"reads up to {store.SCHEMA_VERSION}): upgrade isobench to read it"
    )
    with pytest.raises(manifest.ManifestError, match="schema_version is"):
        _manifest(tmp_path, schema_version=newer)  # nor is one written


def test_migration_chain_runs_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(manifest, "SCHEMA_VERSION", 4)
    monkeypatch.setitem(manifest.MIGRATIONS, 2, lambda m: m.setdefault("steps", []).append(2))
    monkeypatch.setitem(manifest.MIGRATIONS, 3, lambda m: m["steps"].append(3))
    (tmp_path / store.MANIFEST).write_text(json.dumps({"schema_version": 1, "run_id": "r"}))
    m = store.read_manifest(tmp_path)
    assert m["steps"] == [2, 3] and m["schema_version"] == 4 and m["targets"] == {"local": {}}


def test_a_recorded_version_1_run_migrates_to_version_2(tmp_path):
    run = shutil.copytree(V1_RUN, tmp_path / "run")
    raw = json.loads((run / store.MANIFEST).read_text())
    assert raw["schema_version"] == 1 and "targets" not in raw
    m = store.read_manifest(run)
    assert m["schema_version"] == 2
    assert m["targets"] == {"local": raw["host"]} and m["host"] == raw["host"]
    assert sorted(m["environments"]) == ["host", "namespaces"]
    for label, env in m["environments"].items():
        assert env == {**raw["environments"][label], "target": "local"}
    rest = {k: v for k, v in raw.items() if k not in ("schema_version", "environments")}
    assert {k: m[k] for k in rest} == rest  # nothing else changed, nothing added
    assert set(m) == set(raw) | {"targets"}
    store.write_manifest(run, m)  # a resumed old run is written back as version 2
    assert json.loads((run / store.MANIFEST).read_text())["schema_version"] == 2
    assert store.read_manifest(run) == m
    df = store.load_samples(run)  # version-1 records have no exit_code / stderr_tail
    assert len(df) == 248 and list(df.columns) == list(store.COLUMNS)
    assert df["exit_code"].isna().all() and df["stderr_tail"].isna().all()


def test_version_2_records_keep_exit_code_and_stderr_tail(tmp_path):
    _manifest(tmp_path)
    w = store.SampleWriter(tmp_path)
    failed = _rec(2, status="failed", value=None, exit_code=125, stderr_tail="crun: no cgroup")
    w.append([_rec(1, exit_code=0), failed])
    w.close()
    df = store.load_samples(tmp_path)
    assert list(df["exit_code"]) == [0, 125]
    assert list(df["stderr_tail"].fillna("")) == ["", "crun: no cgroup"]


def test_a_wrong_type_is_refused_on_write_and_on_read(tmp_path):
    good = _manifest(tmp_path, environments={"host": {"kind": "host", "available": True}})
    bad = {**good, "environments": {"host": {"kind": "host", "available": "yes"}}}
    with pytest.raises(manifest.ManifestError) as e:
        store.write_manifest(tmp_path, bad)
    assert "environments.host.available: Input should be a valid boolean (got 'yes')" in str(e)
    assert store.read_manifest(tmp_path) == good  # nothing was written
    for key, value in (("created", "yesterday"), ("run_id", 7), ("warnings", "one")):
        with pytest.raises(manifest.ManifestError, match=f"{key}: "):
            store.write_manifest(tmp_path, {**good, key: value})
    (tmp_path / store.MANIFEST).write_text(json.dumps({**good, "rounds_done": "3"}))
    with pytest.raises(store.StoreError) as e:
        store.read_manifest(tmp_path)
    assert str(e.value).startswith(f"{tmp_path / store.MANIFEST}: rounds_done: ")
    assert "\n" not in str(e.value)


def test_unknown_keys_survive_and_targets_must_be_known(tmp_path):
    m = _manifest(tmp_path, validate="cpu", extra={"nested": [1, 2]}, created=1)
    assert store.read_manifest(tmp_path) == m
    env = {"kind": "docker", "target": "lab-1"}
    with pytest.raises(manifest.ManifestError, match="target 'lab-1', which is not in targets"):
        store.write_manifest(tmp_path, {**m, "environments": {"docker": env}})
    ok = {**m, "targets": {"lab-1": {"kernel": "6.1"}}, "environments": {"docker": env}}
    store.write_manifest(tmp_path, ok)
    assert store.read_manifest(tmp_path) == ok


def test_json_safe():
    nested = {"a": [1.5, math.nan, (math.inf, None)], 2: {"b": np.float64(-math.inf)}}
    assert store.json_safe(nested) == {"a": [1.5, None, [None, None]], "2": {"b": None}}
    out = store.json_safe([np.float64(2.5), np.int64(3), np.bool_(True), "nan"])
    assert out == [2.5, 3, True, "nan"] and [type(x) for x in out] == [float, int, bool, str]
    assert store.json_safe(math.nan) is None and store.json_safe(None) is None


@pytest.mark.requires("root")
def test_full_disk_keeps_what_was_written_and_holds_the_rest(tmp_path):
    """A real full filesystem (a 64 KiB tmpfs): nothing written is damaged, the records
    that did not fit are held and written once there is room again."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], check=True)
    w = None
    try:
        _manifest(mnt)
        w = store.SampleWriter(mnt)
        w.append([_rec(0)])
        filler = mnt / "filler"
        with pytest.raises(OSError), open(filler, "wb") as f:
            f.write(b"x" * 200_000)
        with pytest.raises(store.StoreWriteError, match="held in memory"):
            w.append([_rec(i) for i in range(1, 100)])
        assert list(store.load_samples(mnt)["value"]) == [0.0]  # intact, no torn line
        with pytest.raises(store.StoreWriteError):
            _manifest(mnt, status="big" * 30000)
        assert store.read_manifest(mnt)["status"] == "running"  # the old one survives
        filler.unlink()
        w.append([_rec(100)])
        assert len(store.load_samples(mnt)) == 101
    finally:
        if w is not None:
            w.close()
        subprocess.run(["umount", "-l", str(mnt)], check=True)
