"""Live migration keeps a TCG guest's memory intact (the driver's argv and migration flow).

QEMU before 9.0 forgets to re-arm TCG's dirty tracking after syncing a RAM block whose
size is a multiple of 64 pages: stores after the first pass are never sent, and the
guest arrives with stale pages. Here a guest that rewrites 48 MiB and checks it panicked
on its first move in 4 of 4 runs without the RAM padding (qemu_cmd.TCG_RAM_PAD); the
same guest must survive several moves back and forth, each on a fresh incoming QEMU.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cumulo.drivers.vm import initramfs, migration
from cumulo.drivers.vm.accel import TSC_RELIABLE, Accel, host_tsc_khz
from cumulo.drivers.vm.qemu_cmd import MIB, QEMU, Io, Machine, VmSpec, build_argv, ram_pad

pytestmark = [pytest.mark.system, pytest.mark.root, pytest.mark.qemu, pytest.mark.slow]

MOVES = 4
PROGRESS_WAIT = 120.0   # s for the guest to check its memory twice after a move (TCG, loaded)
BAD = ("MISMATCH", "Kernel panic", "BUG:", "Oops", "corruption")

# the guest's init: rewrite every page of a buffer, sleep, check them all, print progress
MEMCHECK = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <time.h>
int main(void) {
    size_t n = (size_t)atoi(getenv("MIB") ? getenv("MIB") : "48") * 256;
    volatile uint64_t *b = mmap(0, n * 4096, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    struct timespec nap = {0, 20000000};
    uint64_t gen = 0;
    time_t last = 0;
    printf("memcheck: %zu pages\n", n); fflush(stdout);
    for (;;) {
        for (size_t p = 0; p < n; p++)
            if (b[p * 512] != gen || b[p * 512 + 511] != gen) {
                printf("MISMATCH gen %llu page %zu\n", (unsigned long long)gen, p);
                fflush(stdout);
                break;
            }
        gen++;
        for (size_t p = 0; p < n; p++) b[p * 512] = b[p * 512 + 511] = gen;
        if (time(0) - last >= 2) {
            last = time(0); printf("ok gen=%llu\n", (unsigned long long)gen); fflush(stdout);
        }
        nanosleep(&nap, 0);
    }
}
"""


def _guest(tmp: Path) -> Path:
    src, exe = tmp / "memcheck.c", tmp / "memcheck"
    src.write_text(MEMCHECK)
    subprocess.run(["gcc", "-O2", "-static", "-o", str(exe), str(src)], check=True)
    initrd = tmp / "initrd.cpio"
    initrd.write_bytes(initramfs.build_app(exe.read_bytes(), "memcheck"))
    return initrd


def _spec(tmp: Path, initrd: Path, hop: int) -> VmSpec:
    run = tmp / f"hop{hop}"
    run.mkdir()
    khz = host_tsc_khz()
    tsc = f" tsc_early_khz={khz} {TSC_RELIABLE}" if khz else ""
    return VmSpec(name="memcheck", memory=128 * MIB, vcpus=1, accel=Accel.TCG,
                  machine=Machine.MICROVM, io=Io.PARAVIRT,
                  kernel=initramfs.find_kernel().boot, initrd=initrd,
                  append=f"console=ttyS0 quiet panic=-1 rdinit=/memcheck MIB=48{tsc}",
                  serial_log=run / "console.log", qmp_socket=run / "qmp.sock",
                  pidfile=run / "qemu.pid", ram_pad=ram_pad(Accel.TCG))


def _wait_checks(vm: VmSpec, checks: int) -> str:
    """The console once the guest printed ``checks`` progress lines, or a failure."""
    deadline = time.monotonic() + PROGRESS_WAIT
    while True:
        text = vm.serial_log.read_text(errors="replace") if vm.serial_log.exists() else ""
        if any(b in text for b in BAD) or len(re.findall(r"^ok gen=", text, re.M)) >= checks:
            return text
        assert time.monotonic() < deadline, f"no progress of the guest: {text[-1500:]}"
        time.sleep(0.5)


def test_a_tcg_guest_that_rewrites_its_memory_survives_live_moves(tmp_path: Path) -> None:
    initrd = _guest(tmp_path)
    pids: list[int] = []
    try:
        src = _spec(tmp_path, initrd, 0)
        assert (src.memory + src.ram_pad) % (64 * 4096), "QEMU's 64-page fast path"
        subprocess.run(build_argv(src, QEMU), check=True)
        pids.append(int(src.pidfile.read_text()))
        _wait_checks(src, 1)
        for hop in range(1, MOVES + 1):
            dst = _spec(tmp_path, initrd, hop)
            subprocess.run(migration.incoming_argv(dst, QEMU, autostart=False), check=True)
            pids.append(int(dst.pidfile.read_text()))
            uri = migration.listen(dst.qmp_socket, "127.0.0.1")
            stats = migration.send(src.qmp_socket, uri, live=True)
            assert stats.passes >= 2, "not a live migration: nothing to lose"
            assert migration.wait_incoming(dst.qmp_socket, resume=True) == "running"
            os.kill(pids[-2], signal.SIGKILL)
            text = _wait_checks(dst, 2)
            assert not [b for b in BAD if b in text], f"move {hop}: {text[-2500:]}"
            src = dst
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
