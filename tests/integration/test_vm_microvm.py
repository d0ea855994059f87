"""--machine microvm on TCG boots (it hung in PIT calibration before tsc_early_khz).

One boot: the busybox guest on microvm, with a vTPM, reaches its command and returns
its exit code; the kernel command line carries the host's TSC rate, and the guest keeps
the TSC as its clock (tsc=reliable) and reads the wall clock from the RTC; the guest
sees a TPM 2.0 (QEMU's ISA tpm-tis on microvm, found by the forced TIS probe: microvm has no
TPM2 ACPI table).
"""

from __future__ import annotations

import shutil
import time

import pytest

from cumulo.drivers.base import RunStatus
from cumulo.drivers.vm.accel import host_tsc_khz
from cumulo.host import procs
from tests.integration.test_vm_driver import Env, env  # noqa: F401  (the fixture)

# ruff: noqa: F811   (tests take the imported env fixture as a parameter)

pytestmark = [pytest.mark.qemu, pytest.mark.slow]


def test_microvm_boots_on_tcg_and_returns_the_exit_code(env: Env) -> None:
    khz = host_tsc_khz()
    if khz is None:
        pytest.skip("the host does not report its TSC rate")
    if shutil.which("swtpm") is None:
        pytest.skip("swtpm is not installed")
    spec = env.spec(["sh", "-c", "echo virtio=$(ls /sys/bus/virtio/devices | wc -l);"
                                 " echo year=$(date +%Y);"
                                 " echo tpm=$(cat /sys/class/tpm/tpm0/tpm_version_major)"
                                 " $(ls /dev/tpmrm0);"
                                 # past the clocksource watchdog's verdict (it took the TSC
                                 # away ~6 s after boot without tsc=reliable)
                                 " while [ $(cut -d. -f1 /proc/uptime) -lt 10 ]; do sleep 1;"
                                 " done; echo clock=$(cat /sys/devices/system/clocksource/"
                                 "clocksource0/current_clocksource); exit 5"],
                    machine="microvm", tpm="on")
    env.driver.create(spec)
    started = time.monotonic()
    state = env.driver.start(spec)
    assert state.pid
    out = env.console_until(spec.host_id, b"CUMULO-EXIT", timeout=90).decode(errors="replace")
    print(f"microvm: CUMULO-EXIT after {time.monotonic() - started:.2f}s (TCG)")
    assert "virtio=3" in out, out    # rng, balloon and the agent's virtio-serial, on mmio
    assert "tpm=2 /dev/tpmrm0" in out, out
    # the wall clock from the RTC (without one the guest lived in 1970, and its kernel
    # spent ~5 s of a TCG boot probing for it)
    assert f"year={time.gmtime().tm_year}" in out, out
    assert f"tsc_early_khz={khz} tsc=reliable" in env.driver._vmspec(spec.host_id).append
    assert "clock=tsc" in out, out   # not refined-jiffies: timing in the guest stays fine
    assert procs.wait_dead(state.pid, 30.0)
    final = env.driver.state(spec.host_id)
    assert final.status == RunStatus.STOPPED and final.exit_code == 5
