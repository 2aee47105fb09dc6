"""The probe output contract parser, on recorded probe output."""

from bench.probeio import is_ready, parse_lines

RECORDED = [
    '{"probe":"syscall","op":"null","iterations":65536,"elapsed_ns":14466907,'
    '"metrics":{"ns_per_op":220.747},"units":{"ns_per_op":"ns"},"checksum":1870790656}',
    '{"probe":"io","op":"fsync_lat","iterations":200,"elapsed_ns":26627533,'
    '"metrics":{"p50_us":133.749,"p99_us":206.547},"units":{"p50_us":"us","p99_us":"us"},'
    '"checksum":0}',
    '{"probe":"syscall","op":"fork_exec","error":"cannot find own binary"}',
    "[    1.234] virtio_blk virtio1: [vda] 16384 512-byte logical blocks",
    '{"probe":"syscall","op":"x","iterations":1,"elapsed_ns":1,"metrics":{"a":1},"units":{}}',
    "",
]


def test_parse_lines_sorts_records_errors_and_garbage():
    out = parse_lines(RECORDED)
    assert [r["op"] for r in out.records] == ["null", "fsync_lat"]
    assert out.records[1]["metrics"] == {"p50_us": 133.749, "p99_us": 206.547}
    assert out.errors == ["syscall/fork_exec: cannot find own binary"]
    assert len(out.garbage) == 2  # the kernel line and the record whose unit is missing


def test_ready_line():
    assert is_ready("ready") and is_ready("ready\r") and not is_ready("ready!")
