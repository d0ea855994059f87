"""Measured boot, guest side: the sha256 PCRs and the firmware's event log of a booted VM,
read through the QEMU guest agent from what the guest's kernel exposes (Linux 5.12+:
``/sys/class/tpm/tpm0/pcr-sha256/N``; securityfs: ``binary_bios_measurements``)."""

from __future__ import annotations

from cumulo.drivers.vm.eventlog import NUM_PCRS
from cumulo.drivers.vm.qga import Qga
from cumulo.errors import InvalidInputError, UnsupportedError

PCR_DIR = "/sys/class/tpm/tpm0/pcr-sha256"
EVENT_LOG = "/sys/kernel/security/tpm0/binary_bios_measurements"
LOG_LIMIT = 4 * 2**20


def read(guest: Qga, name: str) -> tuple[dict[int, str], bytes]:
    try:
        pcrs = {n: guest.read_file(f"{PCR_DIR}/{n}", 256).decode().strip().lower()
                for n in range(NUM_PCRS)}
    except InvalidInputError as said:
        raise UnsupportedError(f"the guest {name!r} shows no TPM 2.0 sha256 PCRs"
                               f" ({PCR_DIR}: {said})") from None
    try:
        log = guest.read_file(EVENT_LOG, LOG_LIMIT)
    except InvalidInputError as said:
        raise UnsupportedError(f"the guest {name!r} shows no firmware event log"
                               f" ({EVENT_LOG}: {said})") from None
    return pcrs, log
