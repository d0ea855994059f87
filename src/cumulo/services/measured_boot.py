"""Measured boot: a VM's vTPM PCRs and event log, a recorded baseline, a verification.

With ``--tpm`` and UEFI, OVMF measures the firmware, its configuration, the boot
variables and the bootloader into PCRs 0-7, and GRUB (its ``tpm`` module) its commands
and the kernel's command line into PCR 8 and the files it reads (grub.cfg, kernel,
initrd) into PCR 9. `report` reads them in the running guest (drivers/vm/measured.py)
and checks that the event log replays to the PCRs the TPM gives; `record` keeps PCRs
0-9 and the log's events as the VM's baseline; `verify` compares the current boot with
it and names the PCRs that differ, with the events the baseline did not have.

The PCRs come from the guest's own kernel: this detects a changed boot chain, it is not
remote attestation (no TPM quote signed by a key the host trusts).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime

from cumulo.domain.lifecycle import Action, guard
from cumulo.drivers.base import TpmReader
from cumulo.drivers.vm import eventlog
from cumulo.errors import DriverError, InvalidInputError, UnsupportedError
from cumulo.services.instances import InstanceService
from cumulo.store.tpm_baselines import Baseline, TpmBaselineStore

BOOT_PCRS = tuple(range(10))      # 0-7: UEFI firmware and boot manager; 8-9: GRUB
MEANING = {0: "firmware code", 1: "firmware configuration", 2: "option ROMs",
           3: "option ROM configuration", 4: "boot manager and bootloader",
           5: "GPT and boot configuration", 6: "platform events",
           7: "secure boot policy", 8: "GRUB commands and kernel command line",
           9: "files GRUB read: grub.cfg, kernel, initrd"}


@dataclass(frozen=True)
class Measurements:
    pcrs: dict[int, str]
    events: list[eventlog.Event]
    mismatched: list[int]            # PCRs the event log does not add up to


@dataclass(frozen=True)
class PcrChange:
    pcr: int
    meaning: str
    baseline: str
    current: str
    events: list[str] = field(default_factory=list)   # measured now, not in the baseline


@dataclass(frozen=True)
class Verdict:
    ok: bool
    changed: list[PcrChange]
    baseline_at: datetime | None


class MeasuredBootService:
    def __init__(self, instances: InstanceService, baselines: TpmBaselineStore) -> None:
        self.instances, self.baselines = instances, baselines

    def report(self, project: str, name: str) -> Measurements:
        inst = self.instances.get(project, name)
        driver = self.instances.driver_of(inst)
        if not isinstance(driver, TpmReader):
            raise UnsupportedError(f"{name!r} is a {inst.type}: only VMs have a vTPM")
        guard(name, inst.state, Action.EXEC)
        pcrs, log = driver.tpm_measurements(inst.host_id)
        try:
            events = eventlog.parse(log)
        except InvalidInputError as said:
            raise DriverError(f"{name}: {said}") from None
        replayed = eventlog.replay(events)
        mismatched = [n for n, v in replayed.items() if pcrs.get(n) != v]
        return Measurements(pcrs, events, mismatched)

    def record(self, project: str, name: str) -> Baseline:
        """The current boot's PCRs 0-9 and events become the VM's baseline."""
        m = self.report(project, name)
        if bad := [n for n in m.mismatched if n in BOOT_PCRS]:
            raise DriverError(f"the event log of {name!r} does not add up to PCR"
                              f" {', '.join(map(str, bad))}: not recording it")
        return self.baselines.put(project, name, Baseline(
            {n: m.pcrs[n] for n in BOOT_PCRS},
            [asdict(e) for e in m.events if e.pcr in BOOT_PCRS]))

    def verify(self, project: str, name: str) -> Verdict:
        base = self.baselines.get(project, name)
        if base is None:
            raise InvalidInputError(f"{name!r} has no measured-boot baseline: record one"
                                    f" with `cumulo tpm baseline {name}`")
        m = self.report(project, name)
        known = {(e["pcr"], e["type"], e["sha256"]) for e in base.events}
        changed = [PcrChange(n, MEANING[n], base.pcrs[n], m.pcrs.get(n, ""),
                             [f"{e.type} {e.description}" for e in m.events
                              if e.pcr == n and (e.pcr, e.type, e.sha256) not in known])
                   for n in sorted(base.pcrs) if m.pcrs.get(n) != base.pcrs[n]]
        return Verdict(not changed, changed, base.created_at)
