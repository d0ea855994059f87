"""App VMs without QEMU: the static-program check, the kernel command line, exit status."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cumulo.drivers.vm.appvm import app_append, exit_status
from cumulo.errors import InvalidInputError
from cumulo.images.app import check_static

HELLO = '#include <stdio.h>\nint main(void) { puts("hi"); return 7; }\n'


@pytest.fixture(scope="module")
def programs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    d = Path(str(tmp_path_factory.mktemp("apps")))
    (d / "hello.c").write_text(HELLO)
    out = {}
    for kind, flags in (("static", ["-static"]), ("dynamic", []), ("pie", ["-static-pie"])):
        r = subprocess.run(["gcc", *flags, "-o", str(d / kind), str(d / "hello.c")],
                           capture_output=True, text=True, timeout=120)
        if r.returncode == 0:
            out[kind] = (d / kind).read_bytes()
    return out


def test_static_programs_pass_and_dynamic_ones_get_a_clear_error(programs: dict[str, bytes]
                                                                  ) -> None:
    check_static(programs["static"], "hello")
    if "pie" in programs:
        check_static(programs["pie"], "hello")
    with pytest.raises(InvalidInputError, match=r"dynamically linked \(it needs /lib64/ld-"
                                                 r".*gcc -static"):
        check_static(programs["dynamic"], "hello")


def test_not_a_program_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="not an ELF"):
        check_static(b"#!/bin/sh\necho hi\n", "script.sh")
    with pytest.raises(InvalidInputError, match="invalid app name"):
        check_static(b"\x7fELF", "../x")
    with pytest.raises(InvalidInputError, match="invalid app name"):
        check_static(b"\x7fELF", "dev")
    with pytest.raises(InvalidInputError, match="64-bit"):
        check_static(b"\x7fELF" + b"\x01\x01" + b"\0" * 60, "x32")


def test_arguments_go_after_the_double_dash_quoted_when_needed() -> None:
    assert app_append("bb", ["echo", "a b", "c=d"]).endswith(' rdinit=/bb -- echo "a b" c=d')
    assert "reboot=t" in app_append("x", []) and "panic=-1" in app_append("x", [])
    for bad in ('say "hi"', "", "a\nb"):
        with pytest.raises(InvalidInputError, match="kernel command line"):
            app_append("x", [bad])
    assert app_append("x", [], 2445430).endswith(
        " tsc_early_khz=2445430 tsc=reliable lapic_timer_period=4000000 no_timer_check"
        " rdinit=/x --")
    with pytest.raises(InvalidInputError, match="at most 30"):
        app_append("x", ["x"] * 31)


def test_exit_status_from_the_wait_status_of_init() -> None:
    assert exit_status(0x0700) == 7
    assert exit_status(0) == 0
    assert exit_status(0x0009) == 137      # killed by SIGKILL


def test_console_stops_at_the_kernel_panic_that_follows_the_program_s_exit(
        tmp_path: Path) -> None:
    from cumulo.drivers.registry import DriverContext
    from cumulo.drivers.vm.accel import Accel
    from cumulo.drivers.vm.appvm import AppVmDriver
    from cumulo.drivers.vm.qemu_cmd import MIB, Io, Machine, VmSpec
    from cumulo.host.info import HostInfo

    driver = AppVmDriver(DriverContext(state_dir=tmp_path / "s", runtime_dir=tmp_path / "r",
                                       cgroup_parent="x", host=HostInfo()))
    log = tmp_path / "console.log"
    vm = VmSpec(name="a", memory=128 * MIB, vcpus=1, accel=Accel.TCG, machine=Machine.MICROVM,
                io=Io.PARAVIRT, kernel=tmp_path, initrd=tmp_path, append="", serial_log=log,
                qmp_socket=tmp_path / "q", pidfile=tmp_path / "p")
    driver._records.put("a", {"instance_dir": str(tmp_path), "vm": vm.to_dict()})
    log.write_bytes(b"hello\n[    6.42")
    assert driver.read_console("a", 0) == (b"hello\n", 6)      # the partial "[" line waits
    log.write_bytes(b"hello\n[    6.424978] Kernel panic - not syncing: Attempted to kill init!"
                    b" exitcode=0x00000700\n[    6.42] CPU: 0 PID: 1 Comm: hello\n")
    size = log.stat().st_size
    assert driver.read_console("a", 6) == (b"", size)
    assert driver.read_console("a", 0) == (b"hello\n", size)
    assert driver.read_console("a", size) == (b"", size)
    assert driver._exit_code(vm) == 7


def test_host_tsc_rate_from_cpuinfo(tmp_path: Path) -> None:
    from cumulo.drivers.vm.accel import host_tsc_khz

    (tmp_path / "cpuinfo").write_text("processor\t: 0\ncpu MHz\t\t: 2445.430\n")
    assert host_tsc_khz(tmp_path / "cpuinfo") == 2445430
    (tmp_path / "cpuinfo").write_text("processor\t: 0\n")
    assert host_tsc_khz(tmp_path / "cpuinfo") is None
    assert host_tsc_khz(tmp_path / "missing") is None


def test_a_qemu_that_outlives_its_guest_s_end_is_killed(tmp_path: Path) -> None:
    """QEMU 7.2 can hang for good on its way out (in monitor_cleanup, when a QMP client
    connects just then): once the guest told its program's end, the driver asks QEMU
    nothing, and kills a QEMU still there ``EXIT_GRACE`` after the console went quiet."""
    import os
    import subprocess
    import sys

    from cumulo.drivers.base import RunStatus
    from cumulo.drivers.registry import DriverContext
    from cumulo.drivers.vm import driver as vm_driver
    from cumulo.drivers.vm.accel import Accel
    from cumulo.drivers.vm.appvm import AppVmDriver
    from cumulo.drivers.vm.qemu_cmd import MIB, Io, Machine, VmSpec
    from cumulo.host.info import HostInfo

    driver = AppVmDriver(DriverContext(state_dir=tmp_path / "s", runtime_dir=tmp_path / "r",
                                       cgroup_parent="x", host=HostInfo()))
    log, pidfile = tmp_path / "console.log", tmp_path / "qemu.pid"
    vm = VmSpec(name="a", memory=128 * MIB, vcpus=1, accel=Accel.TCG, machine=Machine.MICROVM,
                io=Io.PARAVIRT, kernel=tmp_path, initrd=tmp_path, append="", serial_log=log,
                qmp_socket=tmp_path / "no-qmp", pidfile=pidfile)
    driver._records.put("a", {"instance_dir": str(tmp_path), "vm": vm.to_dict()})
    # a stand-in for the hung QEMU: a process whose command line names the pid file
    hung = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             str(pidfile)])
    try:
        pidfile.write_text(f"{hung.pid}\n")
        log.write_bytes(b"out\n")
        assert driver.state("a").status == RunStatus.RUNNING    # no end told: it runs
        log.write_bytes(b"out\n[    2.126892] Kernel panic - not syncing: Attempted to kill"
                        b" init! exitcode=0x00000300\n")
        assert driver.state("a").status == RunStatus.RUNNING    # going, give it time
        assert hung.poll() is None
        old = log.stat().st_mtime - vm_driver.EXIT_GRACE - 1
        os.utime(log, (old, old))
        now = driver.state("a")
        assert (now.status, now.exit_code) == (RunStatus.STOPPED, 3)
        assert hung.wait(5) == -9
    finally:
        hung.kill()
        hung.wait()
