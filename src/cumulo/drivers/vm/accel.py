"""Which QEMU accelerator a VM gets, decided from the host probe alone."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cumulo.errors import InvalidInputError, UnsupportedError
from cumulo.host.info import HostInfo


class Accel(StrEnum):
    KVM = "kvm"
    TCG = "tcg"


@dataclass(frozen=True)
class AccelChoice:
    accel: Accel
    notice: str | None = None        # said to the user when ``auto`` had to fall back


def _why_not_kvm(host: HostInfo) -> str:
    if host.kvm == "pvm":
        return ("this host's KVM is PVM (kvm_pvm, no vmx/svm): a stock guest kernel cannot"
                " boot under it, only a PVM guest kernel can")
    if host.kvm == "none":
        return "this host has no hardware virtualization (no vmx/svm CPU flag, no /dev/kvm)"
    return f"the CPU has {host.kvm} but /dev/kvm or the kvm_intel/kvm_amd module is missing"


def choose_accel(wanted: str, host: HostInfo) -> AccelChoice:
    """``auto`` -> KVM if usable, else TCG with a notice; ``kvm`` where unusable raises."""
    if wanted == "tcg":
        return AccelChoice(Accel.TCG)
    if wanted == "kvm":
        if not host.kvm_usable:
            raise UnsupportedError(f"--accel kvm is not possible: {_why_not_kvm(host)}"
                                   "; use --accel tcg (full emulation, slower)")
        return AccelChoice(Accel.KVM)
    if wanted == "auto":
        if host.kvm_usable:
            return AccelChoice(Accel.KVM)
        return AccelChoice(Accel.TCG, f"using TCG emulation (slow): {_why_not_kvm(host)}")
    raise InvalidInputError(f"unknown accelerator {wanted!r}: use auto, kvm or tcg")


# With tsc_early_khz on a TCG microvm: the guest's only other clock is refined-jiffies,
# driven by timer interrupts TCG delivers late on a busy host, so the clocksource watchdog
# marks the TSC unstable a few seconds after boot and the guest falls back to jiffies
# (4 ms steps; gettimeofday differences even came out negative, seen as negative STREAM
# rates in `cumulo bench`). A TCG guest's TSC is the host's, so it is trusted as is.
TSC_RELIABLE = "tsc=reliable"


def host_tsc_khz(cpuinfo: Path = Path("/proc/cpuinfo")) -> int | None:
    """The host's TSC rate in kHz, which a TCG guest's TSC ticks at, if the host says.

    Given to a TCG microvm guest as ``tsc_early_khz``: microvm has no HPET or PM timer,
    and on a loaded host the kernel's PIT calibration fails and the boot hangs."""
    try:
        m = re.search(r"^cpu MHz\s*:\s*([0-9.]+)", cpuinfo.read_text(), re.MULTILINE)
    except OSError:
        return None
    return round(float(m.group(1)) * 1000) if m else None
