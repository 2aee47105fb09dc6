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


# Recorded from the io probe under docker --runtime=runsc (gVisor) and on the host.
GVISOR_READ = (
    '{"probe":"io","op":"seq_read","iterations":32,"elapsed_ns":4796382,'
    '"metrics":{"mb_per_s":6995.780},"units":{"mb_per_s":"MB/s"},"checksum":496,'
    '"direct":true,"page_cache":true,"note":"O_DIRECT did not bypass the page cache: the '
    "read ran at page-cache speed (5101 MB/s with O_DIRECT, 6005 MB/s warm buffered), so "
    "it was served from the page cache (a filesystem that ignores O_DIRECT, or tmpfs), not "
    'a device"}'
)
HOST_READ = (
    '{"probe":"io","op":"seq_read","iterations":32,"elapsed_ns":21355870,'
    '"metrics":{"mb_per_s":1571.204},"units":{"mb_per_s":"MB/s"},"checksum":496,'
    '"direct":true,"page_cache":false}'
)


def test_page_cache_member_and_note():
    from bench.probeio import PAGE_CACHE_NOTE, page_cache

    gvisor, host = parse_lines([GVISOR_READ, HOST_READ]).records
    assert page_cache(gvisor) and PAGE_CACHE_NOTE in gvisor["note"]
    assert not page_cache(host) and "note" not in host


def test_flags_that_are_not_booleans_are_not_the_contract():
    bad = HOST_READ.replace('"page_cache":false', '"page_cache":"no"')
    worse = HOST_READ.replace('"direct":true', '"direct":1')
    out = parse_lines([bad, worse, HOST_READ[:-1] + ',"note":3}'])
    assert not out.records and len(out.garbage) == 3
