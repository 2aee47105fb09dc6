"""Pure parts of the guest side: bzImage header, module order, cpio, command line,
console, and how a boot's console becomes launches (a round, a held guest)."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import select
import socket
import subprocess
import threading
import time
import tty
from pathlib import Path

import psutil
import pytest

from bench import catalog
from bench.bundle import find_busybox
from bench.envs.base import SERVE, ChannelError, Context, Invocation, OptionError, served
from bench.envs.guest import (
    GuestError,
    channel,
    console,
    cpio,
    initramfs,
    kernel,
    modules,
    qemu_cmd,
    tap,
)
from bench.envs.qemu import QemuEnv
from bench.envs.vm import Boot

DATA = Path(__file__).parent / "data" / "guest"


def test_bzimage_version_from_recorded_header():
    head = (DATA / "bzimage-6.1.0-56-amd64.head").read_bytes()
    assert kernel.bzimage_version(head) == "6.1.0-56-amd64"


def test_bzimage_version_rejects_other_files():
    assert kernel.bzimage_version(b"\x7fELF" + b"\0" * 4096) is None
    assert kernel.bzimage_version(b"") is None


def test_modules_dep_order_puts_dependencies_first():
    deps = {
        n: d for n, (_, d) in modules.parse_modules_dep((DATA / "modules.dep").read_text()).items()
    }
    order = modules.module_load_order(deps, ["virtio_pci", "virtio_blk", "ext4"])
    assert set(order) == {
        "virtio",
        "virtio_ring",
        "virtio_pci_modern_dev",
        "virtio_pci_legacy_dev",
        "virtio_pci",
        "virtio_blk",
        "crc16",
        "mbcache",
        "jbd2",
        "ext4",
    }
    for name in order:
        assert all(order.index(d) < order.index(name) for d in deps[name])
    assert len(order) == len(set(order))


def test_module_order_skips_builtin_and_names_missing():
    deps = {"a": ["b"], "b": []}
    assert modules.module_load_order(deps, ["a"], builtin=["b"]) == ["a"]
    with pytest.raises(GuestError, match="virtio_mmio"):
        modules.module_load_order(deps, ["virtio_mmio"])


def test_module_name_strips_compression():
    assert modules.module_name("kernel/fs/ext4/ext4.ko.xz") == "ext4"
    assert modules.module_name("kernel/x/crc32c-generic.ko") == "crc32c_generic"


def test_cpio_round_trip():
    entries = [
        cpio.CpioEntry("bin", cpio.DIR | 0o755),
        cpio.CpioEntry("bin/x", cpio.REG | 0o755, b"abc"),
        cpio.CpioEntry("bin/sh", cpio.LNK | 0o777, b"busybox"),
        cpio.CpioEntry("empty", cpio.REG | 0o644, b""),
    ]
    data = cpio.write_newc(entries)
    assert len(data) % 4 == 0
    assert cpio.read_newc(data) == entries


def _decoded(words: list[str]) -> list[tuple[str, list[str]]]:
    """The runs a command line names, read the way RUN_SCRIPT reads them."""
    runs: list[tuple[str, list[str]]] = []
    for w in words:
        if w.startswith("isobench.run="):
            runs.append((w.split("=", 1)[1], []))
        elif w.startswith("isobench.arg="):
            runs[-1][1].append(base64.b64decode(w.split("=", 1)[1]).decode())
    return runs


def test_cmdline_carries_each_run_and_argument_as_data():
    args = ("--dir", "/mnt/io", "a b; $(reboot)", "'\"", "")
    runs = [console.GuestRun("startup", (), False), console.GuestRun("io", args, True)]
    words = console.cmdline(runs, 29.5).split()
    assert "isobench.disk=1" in words and "isobench.timeout=30" in words
    assert _decoded(words) == [("startup", []), ("io", list(args))]
    assert "isobench.disk=1" not in console.cmdline(runs[:1], 1).split()
    with pytest.raises(GuestError, match="plain file name"):
        console.cmdline([console.GuestRun("../x", (), False)], 1)
    with pytest.raises(GuestError, match="too long"):
        console.cmdline([console.GuestRun("io", ("x" * 1600,), False)], 1)


def test_a_net_boot_says_the_nics_address_on_the_command_line():
    runs = [console.GuestRun("net", ("--server", "--port", "4321"), False)]
    words = console.cmdline(runs, 60, "10.201.3.6/30").split()
    assert "isobench.net=10.201.3.6/30" in words
    assert not [w for w in console.cmdline(runs, 60).split() if w.startswith("isobench.net")]
    with pytest.raises(ValueError):
        console.cmdline(runs, 60, "10.201.3.6/30 isobench.run=x")  # one address, nothing more


def _spec(tmp_path, machine: str, nic=None) -> qemu_cmd.QemuSpec:
    k = kernel.GuestKernel(tmp_path / "vmlinuz", "6.1", "0" * 64, None, "option")
    img = initramfs.GuestImage(k, tmp_path / "i.gz", "0" * 64, {})
    return qemu_cmd.QemuSpec("/usr/bin/qemu-system-x86_64", img, "x", "tcg", machine, nic=nic)


def test_a_nic_is_virtio_net_on_the_given_tap_without_a_script(tmp_path):
    nic = ("ibt0123abcd", "52:54:00:aa:bb:cc")
    for machine, device in (("q35", "virtio-net-pci,romfile="), ("microvm", "virtio-net-device")):
        argv = qemu_cmd.qemu_command(_spec(tmp_path, machine, nic))
        netdev = argv[argv.index("-netdev") + 1]
        assert netdev == "tap,id=net0,ifname=ibt0123abcd,script=no,downscript=no"
        assert argv[argv.index("-device", argv.index("-netdev")) + 1] == (
            f"{device},netdev=net0,mac=52:54:00:aa:bb:cc"
        )
    assert "-netdev" not in qemu_cmd.qemu_command(_spec(tmp_path, "q35"))


def test_tap_names_and_macs_are_the_instances_own():
    a, b = tap.tap_name("isobench-r-e0-1"), tap.tap_name("isobench-r-e0-2")
    assert a != b and a.startswith(tap.TAP_PREFIX) and len(a) <= 15
    mac = tap.guest_mac("isobench-r-e0-1")
    first = int(mac.split(":")[0], 16)
    assert mac.startswith("52:54:00:") and not first & 1  # unicast, QEMU's locally run OUI
    assert len(mac.split(":")) == 6 and mac != tap.guest_mac("isobench-r-e0-2")


def test_a_round_of_the_catalog_fits_on_the_kernel_command_line():
    """Every workload of the catalog in one boot, with the arguments emulated guests get."""
    for quick in (True, False):
        invs = [w.invocation(quick=quick, emulated=True) for w in catalog.load().values()]
        runs = [console.guest_run(invs[i]) for i in console.run_order(invs)]
        line = console.cmdline(runs, 600)
        assert len(line) < console.CMDLINE_MAX / 2, line  # room for a longer catalog
        assert [p for p, _ in _decoded(line.split())] == [r.probe for r in runs]


def test_run_order_puts_startup_first_and_keeps_the_rest():
    invs = [Invocation(w, w) for w in ("syscall", "io", "startup", "cpu")]
    assert console.run_order(invs) == [2, 0, 1, 3]
    assert console.run_order(invs[:2]) == [0, 1]


def test_init_runs_each_probe_in_turn_with_its_own_status(tmp_path):
    """RUN_SCRIPT itself, under the busybox that goes into the guest, on fake probes: each
    argument arrives intact, a failing probe and one that outlives the limit (killed with
    its children) leave the others alone, and the console says which is which."""
    busybox = find_busybox()
    if busybox is None:
        _missing("a static busybox (apt-get install busybox-static)")
    probes = tmp_path / "probes"
    probes.mkdir()
    scripts = {
        "args": 'echo ready\nfor a in "$@"; do echo "[$a]"; done',
        "fails": "echo ready\necho 'bad option' >&2\nexit 3",
        "hangs": 'echo ready\n[ "$1" = child ] && exec sleep 60\n"$0" child &\nwait',
    }
    for name, body in scripts.items():
        (probes / name).write_text(f"#!{busybox} sh\n{body}\n")
        (probes / name).chmod(0o755)
    runs = [
        console.GuestRun("args", ("a b", "", "$(touch x)", "'\""), False),
        console.GuestRun("fails", (), False),
        console.GuestRun("hangs", (), False),
        console.GuestRun("args", (), False),
    ]
    words = console.cmdline(runs, 1)
    prologue = f"bb={busybox}; probes={probes}; words='{words}'; mount_io() {{ :; }}\n"
    prologue += 'net_up() { echo "net_up $*" >> net.log; }\n'  # no net word: never called
    res = subprocess.run(
        [str(busybox), "sh", "-c", prologue + initramfs.RUN_SCRIPT],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    con = console.parse_console(res.stdout.splitlines())
    assert con.uptime_s is not None and not con.errors
    assert [(r.probe, r.ready, r.exit_code, r.limit_s) for r in con.runs] == [
        ("args", True, 0, None),
        ("fails", True, 3, None),
        ("hangs", True, 137, 1),
        ("args", True, 0, None),
    ]
    assert con.runs[0].lines == ["[a b]", "[]", "[$(touch x)]", "['\"]"]
    assert not (tmp_path / "x").exists() and not (tmp_path / "net.log").exists()
    assert "bad option" in res.stderr
    for _ in range(30):  # the killed probe's child went with it; the dogs end within 1 s
        if not _processes_under(probes, busybox):
            break
        time.sleep(0.1)
    assert not _processes_under(probes, busybox)


def test_init_brings_the_nic_up_before_the_first_probe(tmp_path):
    """RUN_SCRIPT under the guest's busybox: `isobench.net=` calls net_up with the
    address (the real one loads virtio-net and configures eth0) before any probe runs."""
    busybox = find_busybox()
    if busybox is None:
        _missing("a static busybox (apt-get install busybox-static)")
    probes = tmp_path / "probes"
    probes.mkdir()
    (probes / "seen").write_text(f"#!{busybox} sh\necho ready\ncat net.log\n")
    (probes / "seen").chmod(0o755)
    words = console.cmdline([console.GuestRun("seen", (), False)], 5, "10.201.3.6/30")
    prologue = (
        f"bb={busybox}; probes={probes}; words='{words}'; mount_io() {{ :; }}\n"
        'net_up() { echo "net_up $*" >> net.log; }\n'
    )
    res = subprocess.run(
        [str(busybox), "sh", "-c", prologue + initramfs.RUN_SCRIPT],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    con = console.parse_console(res.stdout.splitlines())
    assert [(r.ready, r.exit_code, r.lines) for r in con.runs] == [
        (True, 0, ["net_up 10.201.3.6/30"])
    ]


def _fake_probes(tmp_path: Path, busybox: Path, scripts: dict[str, str]) -> Path:
    probes = tmp_path / "probes"
    probes.mkdir()
    for name, body in scripts.items():
        (probes / name).write_text(f"#!{busybox} sh\n{body}\n")
        (probes / name).chmod(0o755)
    return probes


SERVES = 'echo ready\nwhile IFS= read -r l; do [ "$l" = quit ] && exit 0; echo "answer $l"; done'


def test_init_serves_a_probe_over_the_control_port(tmp_path):
    """RUN_SCRIPT under the guest's busybox, a pty standing in for the virtio-serial port
    (ctl_open opens it as fd 3): the serving probe's `ready` is on the console, its
    commands come from the port and its answers go there, never to the console; the
    next probe of the boot runs as before, and the relay's fifo is gone."""
    busybox = find_busybox()
    if busybox is None:
        _missing("a static busybox (apt-get install busybox-static)")
    probes = _fake_probes(tmp_path, busybox, {"serves": SERVES, "args": 'echo ready\necho "[$1]"'})
    runs = [
        console.guest_run(served("syscall", "serves")),
        console.GuestRun("args", ("x",), False),
    ]
    words = console.cmdline(runs, 30)
    master, slave = os.openpty()
    tty.setraw(slave)
    prologue = (
        f"bb={busybox}; probes={probes}; tmp={tmp_path}; words='{words}'\n"
        f"mount_io() {{ :; }}; ctl_open() {{ exec 3<>{os.ttyname(slave)}; }}\n"
    )
    proc = subprocess.Popen(
        [str(busybox), "sh", "-c", prologue + initramfs.RUN_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
    )
    try:
        got = b""
        for command in (b"null ms=5\n", b"bogus\n"):
            os.write(master, command)
            deadline = time.monotonic() + 10
            while not got.endswith(b"\n") and time.monotonic() < deadline:
                if select.select([master], [], [], 0.2)[0]:
                    got += os.read(master, 4096)
            assert got.replace(b"\r", b"") == b"answer " + command, got
            got = b""
        os.write(master, b"quit\n")
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
        proc.wait()
        os.close(master)
        os.close(slave)
    con = console.parse_console(out.splitlines())
    assert not con.errors, err
    assert [(r.probe, r.ready, r.exit_code, r.lines) for r in con.runs] == [
        ("serves", True, 0, []),
        ("args", True, 0, ["[x]"]),
    ]
    assert not list(tmp_path.glob("isobench-out.*"))


def test_init_says_so_when_a_serving_probe_has_no_control_port(tmp_path):
    busybox = find_busybox()
    if busybox is None:
        _missing("a static busybox (apt-get install busybox-static)")
    probes = _fake_probes(tmp_path, busybox, {"serves": SERVES})
    words = console.cmdline([console.guest_run(served("syscall", "serves"))], 5)
    prologue = (
        f"bb={busybox}; probes={probes}; tmp={tmp_path}; words='{words}'\n"
        "mount_io() { :; }; ctl_open() { return 1; }\n"
    )
    res = subprocess.run(
        [str(busybox), "sh", "-c", prologue + initramfs.RUN_SCRIPT],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    con = console.parse_console(res.stdout.splitlines())
    assert con.runs == [] and con.errors == [f"no control port ({channel.PORT_NAME}) for serves"]


def test_a_serving_run_is_marked_on_the_command_line():
    run = console.guest_run(served("syscall", "syscall"))
    assert run.serves and run.args == (SERVE,)
    plain = console.GuestRun("startup", (), False)
    words = console.cmdline([plain, run], 10).split()
    at = words.index("isobench.run=syscall")
    assert words[at + 1] == console.SERVE_WORD and words.count(console.SERVE_WORD) == 1
    assert _decoded(words) == [("startup", []), ("syscall", [SERVE])]


def test_a_serving_guest_has_a_control_port_that_qemu_connects_to(tmp_path):
    """The port is a named virtserialport whose chardev connects to the host's socket
    (a comma in its path doubled, as QEMU's option syntax wants)."""
    for machine, bus in (("q35", "virtio-serial-pci"), ("microvm", "virtio-serial-device")):
        spec = dataclasses.replace(_spec(tmp_path, machine), ctl=Path("/s,x/ctl.sock"))
        argv = qemu_cmd.qemu_command(spec)
        assert argv[argv.index("-chardev", argv.index("-append")) + 1] == (
            "socket,id=ctl,path=/s,,x/ctl.sock,server=off"
        )
        devices = [argv[i + 1] for i, a in enumerate(argv) if a == "-device"]
        assert f"{bus},id=ser0" in devices
        assert f"virtserialport,bus=ser0.0,chardev=ctl,name={channel.PORT_NAME}" in devices
    assert "virtserialport" not in " ".join(qemu_cmd.qemu_command(_spec(tmp_path, "q35")))


def test_the_control_port_carries_lines_and_says_in_one_line_why_it_cannot(tmp_path):
    """The host end against a socket client standing in for QEMU: one line each way (an
    answer split across writes, two in one), no answer in time, the guest's end gone,
    the port closed; a path too long for a unix socket is refused up front."""
    port = channel.ControlPort(tmp_path / channel.SOCKET_NAME)
    qemu = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        qemu.connect(str(port.path))
        qemu.sendall(b'{"burst":1')
        threading.Timer(0.05, qemu.sendall, (b'}\n{"burst":2}\n',)).start()
        assert port.ask("null ms=5", 5) == '{"burst":1}'
        assert qemu.recv(100) == b"null ms=5\n"
        assert port.ask("null ms=5", 5) == '{"burst":2}'
        with pytest.raises(ChannelError, match="no answer to 'x' within 0.1 s"):
            port.ask("x", 0.1)
        qemu.close()
        with pytest.raises(ChannelError, match="guest ended") as e:
            port.ask("x", 5)
        assert "\n" not in str(e.value)
    finally:
        qemu.close()
        port.close()
    with pytest.raises(ChannelError, match="has ended"):
        port.ask("x", 1)
    with pytest.raises(GuestError, match="longer than"):
        channel.ControlPort(tmp_path / ("x" * 120))


def _processes_under(probes: Path, busybox: Path) -> list[str]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if str(probes) in cmd or cmd.startswith(f"{busybox} sleep 1"):
            found.append(cmd)
    return found


def _missing(what: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} missing (CI=true: a missing capability fails)")
    pytest.skip(f"{what} missing")


def test_parse_console_of_a_recorded_round():
    """A real TCG boot's console: startup, syscall, cpu with a bad option, io."""
    lines = (DATA / "console-round.txt").read_text().splitlines()
    con = console.parse_console(lines)
    assert con.uptime_s == 7.78 and not con.errors
    assert con.other == ["[    9.629195] reboot: Power down"]
    assert [(r.probe, r.ready, r.exit_code) for r in con.runs] == [
        ("startup", True, 0),
        ("syscall", True, 0),
        ("cpu", True, 2),
        ("io", True, 0),
    ]
    assert con.runs[0].lines == []
    assert [json.loads(x)["op"] for x in con.runs[1].lines] == ["null", "clock_gettime"]
    assert con.runs[2].lines[0] == "cpu: unknown option: --bogus"


def test_parse_console_of_a_guest_that_stopped_early():
    con = console.parse_console(
        ["Probing EDD", "isobench-error insmod virtio_blk", "isobench-uptime 1.25"]
    )
    assert con.errors == ["insmod virtio_blk"] and con.other == ["Probing EDD"]
    con = console.parse_console(["isobench-uptime 2", "isobench-begin 1 io", "ready", '{"a": 1}'])
    assert con.runs == [console.ProbeRun("io", True, ['{"a": 1}'], None, None)]


def test_find_kernel_explains_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("ISOBENCH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(GuestError, match="ISOBENCH_GUEST_KERNEL"):
        kernel.find_kernel(env={}, boot=tmp_path, release="0.0-none")


def test_find_kernel_falls_back_to_a_package_unpacked_in_the_cache(tmp_path, monkeypatch):
    """No /boot kernel: the newest vmlinuz under <cache>/guest-kernel/boot is used."""
    monkeypatch.setenv("ISOBENCH_CACHE", str(tmp_path / "cache"))
    boot = tmp_path / "cache" / "guest-kernel" / "boot"
    boot.mkdir(parents=True)
    (boot / "vmlinuz-6.1.0-1-amd64").write_bytes(
        (DATA / "bzimage-6.1.0-56-amd64.head").read_bytes()
    )
    k = kernel.find_kernel(env={}, boot=tmp_path, release="0.0-none")
    assert k.source == "cache" and k.path == boot / "vmlinuz-6.1.0-1-amd64"


def _round(boot: Boot, workloads=("startup", "syscall", "cpu", "io")) -> list:
    env = QemuEnv({}, Context("t", Path("/nonexistent"), Path("/nonexistent")))
    env.accel = "tcg"
    return env._round_launches(boot, [Invocation(w, w) for w in workloads], 240)


def test_a_round_makes_one_launch_per_probe_and_the_boot_goes_to_startup():
    lines = (DATA / "console-round.txt").read_text().splitlines()
    phases = {"ready": 21_621_151_337, "exit": 23_368_307_332, "cleaned": 23_400_000_000}
    boot = Boot(0, "QEMU killed", lines, phases, cgroup={"cpu_total_ms": 9e3})
    startup, syscall, cpu, io = _round(boot)
    # the boot ran the round's other workloads too: its end is the round's, not startup's
    round_phases = {
        "ready": phases["ready"],
        "round_exit": phases["exit"],
        "round_cleaned": phases["cleaned"],
    }
    assert startup.status == "ok" and startup.phases == {**round_phases, "boot": 7_780_000_000}
    assert startup.cgroup == {"cpu_total_ms": 9e3} and "reboot: Power down" in startup.stderr_tail
    assert syscall.status == "ok" and len(syscall.records) == 2
    assert cpu.status == "failed" and cpu.reason == "probe exited with status 2 in the guest"
    assert cpu.exit_code == 2 and cpu.stderr_tail.startswith("cpu: unknown option: --bogus")
    assert io.status == "ok" and [r["op"] for r in io.records] == ["seq_write"]
    for launch in (syscall, cpu, io):
        assert not launch.phases and not launch.cgroup and not launch.host_side
    assert all(x.extra["round"] == ["startup", "syscall", "cpu", "io"] for x in (startup, io))


def test_a_guest_that_stops_or_hangs_mid_round_says_so_in_every_launch():
    lines = (DATA / "console-round.txt").read_text().splitlines()
    upto_cpu = lines[: lines.index("isobench-begin 3 cpu") + 2]
    stopped = _round(Boot(0, "QEMU killed", upto_cpu, {"ready": 1, "exit": 2}))
    assert [x.status for x in stopped] == ["ok", "ok", "failed", "failed"]
    assert stopped[2].reason == "guest stopped without the probe's exit status"
    assert stopped[3].reason.startswith("guest stopped before io ran")
    hung = _round(Boot(0, "QEMU killed", upto_cpu, {"ready": 1}, timed_out=True))
    assert {x.status for x in hung} == {"timeout"}
    assert all("did not power off within 240 s" in x.reason for x in hung)
    assert len(hung[1].records) == 2  # what a probe measured before the hang is kept
    silent = _round(Boot(0, "QEMU killed", ["isobench-error insmod ext4"]), ("io",))
    assert silent[0].reason == "guest stopped before `ready`: insmod ext4"


def test_an_instance_that_failed_before_the_probe_ran_says_why():
    """libvirtd gone, QEMU refused: that failure is the reason, not 'no console output'."""
    boot = Boot(0, "domain destroyed", [], {}, failure="libvirt: Failed to connect socket")
    (startup,) = _round(boot, ("startup",))
    assert startup.status == "failed" and startup.reason == "libvirt: Failed to connect socket"


def test_a_held_guest_powered_off_once_ready_is_ok():
    """A held guest's stop powers it off: the probe never exits, and that is its end."""
    lines = ["isobench-uptime 2.5", "isobench-begin 1 hold", "ready"]
    boot = Boot(0, "QEMU killed", lines, {"ready": 1, "exit": 3, "cleaned": 4})
    env = QemuEnv({}, Context("t", Path("/nonexistent"), Path("/nonexistent")))
    (held,) = env._round_launches(boot, [Invocation("hold", "hold")], 120, stopped=True)
    assert held.status == "ok" and held.exit_code is None
    assert held.phases == {"boot": 2_500_000_000, "ready": 1, "exit": 3, "cleaned": 4}
    early = Boot(0, "QEMU killed", lines[:1], {"exit": 3})
    (before,) = env._round_launches(early, [Invocation("hold", "hold")], 120, stopped=True)
    assert before.status == "failed" and "before `ready`" in before.reason


def test_guest_memory_takes_the_containers_sizes():
    ctx = Context("t", Path("/nonexistent"), Path("/nonexistent"))
    assert QemuEnv({}, ctx).memory_mib == 512
    assert QemuEnv({"memory": "1g"}, ctx).describe()["memory_mib"] == 1024
    with pytest.raises(OptionError, match="512m"):
        QemuEnv({"memory": "1024"}, ctx)  # bytes, as for docker: not a guest's size
