"""The store: fsynced appends, torn-line recovery, schema checks, full-disk safety."""

import json
import subprocess

import pytest

from bench import store


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
    _manifest(tmp_path, schema_version=store.SCHEMA_VERSION + 1)
    with pytest.raises(store.StoreError, match="newer isobench"):
        store.read_manifest(tmp_path)


def test_migration_chain_runs_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "SCHEMA_VERSION", 3)
    monkeypatch.setitem(store.MIGRATIONS, 1, lambda m: m.setdefault("steps", []).append(1))
    monkeypatch.setitem(store.MIGRATIONS, 2, lambda m: m["steps"].append(2))
    (tmp_path / store.MANIFEST).write_text(json.dumps({"schema_version": 1}))
    m = store.read_manifest(tmp_path)
    assert m["steps"] == [1, 2] and m["schema_version"] == 3


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
