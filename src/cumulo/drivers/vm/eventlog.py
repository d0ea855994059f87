"""The TCG2 (crypto-agile) event log a UEFI firmware hands the kernel: parse and replay.

The guest's kernel exposes it as ``/sys/kernel/security/tpm0/binary_bios_measurements``:
a first event in the old SHA-1 format whose data is the "Spec ID Event03" (which digest
algorithms follow and their sizes), then ``TCG_PCR_EVENT2`` records: PCR index, event
type, one digest per algorithm, the event's data. Replaying the sha256 digests
(``pcr = sha256(pcr || digest)``, EV_NO_ACTION skipped) must give the PCRs the TPM
reports; the data says what was measured (a UEFI variable, an EFI application's device
path, GRUB's ``grub_cmd: ...``, ``kernel_cmdline: ...`` or the path of a file it read).

No library: Debian and PyPI have none that reads this log without the TPM stack's C
libraries (tpm2-pytss needs libtss2); the format is a few fixed records.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from cumulo.errors import InvalidInputError

SHA1, SHA256, SHA384, SHA512, SM3 = 0x0004, 0x000B, 0x000C, 0x000D, 0x0012
_SIZES = {SHA1: 20, SHA256: 32, SHA384: 48, SHA512: 64, SM3: 32}
EV_NO_ACTION = 0x3
SPEC_ID = b"Spec ID Event03\0"
TYPES = {
    0x0: "EV_PREBOOT_CERT", 0x1: "EV_POST_CODE", 0x3: "EV_NO_ACTION", 0x4: "EV_SEPARATOR",
    0x5: "EV_ACTION", 0x6: "EV_EVENT_TAG", 0x7: "EV_S_CRTM_CONTENTS",
    0x8: "EV_S_CRTM_VERSION", 0x9: "EV_CPU_MICROCODE", 0xA: "EV_PLATFORM_CONFIG_FLAGS",
    0xB: "EV_TABLE_OF_DEVICES", 0xC: "EV_COMPACT_HASH", 0xD: "EV_IPL",
    0xE: "EV_IPL_PARTITION_DATA", 0xF: "EV_NONHOST_CODE", 0x10: "EV_NONHOST_CONFIG",
    0x11: "EV_NONHOST_INFO", 0x12: "EV_OMIT_BOOT_DEVICE_EVENTS",
    0x80000001: "EV_EFI_VARIABLE_DRIVER_CONFIG", 0x80000002: "EV_EFI_VARIABLE_BOOT",
    0x80000003: "EV_EFI_BOOT_SERVICES_APPLICATION",
    0x80000004: "EV_EFI_BOOT_SERVICES_DRIVER", 0x80000005: "EV_EFI_RUNTIME_SERVICES_DRIVER",
    0x80000006: "EV_EFI_GPT_EVENT", 0x80000007: "EV_EFI_ACTION",
    0x80000008: "EV_EFI_PLATFORM_FIRMWARE_BLOB", 0x80000009: "EV_EFI_HANDOFF_TABLES",
    0x8000000A: "EV_EFI_PLATFORM_FIRMWARE_BLOB2", 0x8000000B: "EV_EFI_HANDOFF_TABLES2",
    0x800000E0: "EV_EFI_VARIABLE_AUTHORITY",
}
_TEXT = {0x1, 0x5, 0xD, 0x80000007}                    # the data is (mostly) ASCII
_VARIABLES = {0x80000001, 0x80000002, 0x800000E0}      # UEFI_VARIABLE_DATA
_IMAGES = {0x80000003, 0x80000004, 0x80000005}         # UEFI_IMAGE_LOAD_EVENT
NUM_PCRS = 24


@dataclass(frozen=True)
class Event:
    pcr: int
    type: str
    sha256: str          # hex; "" when the log carries no sha256 bank
    description: str


def parse(log: bytes) -> list[Event]:
    """The events after the Spec ID header; an InvalidInputError for what is not one."""
    try:
        return _parse(memoryview(log))
    except (struct.error, IndexError, ValueError) as err:
        raise InvalidInputError(f"the TPM event log is not a TCG2 log: {err}") from None


def _parse(log: memoryview) -> list[Event]:
    pcr, etype = struct.unpack_from("<II", log, 0)
    (size,) = struct.unpack_from("<I", log, 28)
    spec = bytes(log[32:32 + size])
    if etype != EV_NO_ACTION or not spec.startswith(SPEC_ID):
        raise ValueError("no Spec ID Event03 first (a TPM 1.2 log?)")
    (count,) = struct.unpack_from("<I", spec, 24)
    sizes = dict(struct.unpack_from("<HH", spec, 28 + 4 * i) for i in range(count))
    at, events = 32 + size, []
    while at + 12 <= len(log):
        pcr, etype, count = struct.unpack_from("<III", log, at)
        at += 12
        if etype == 0 and pcr == 0 and count == 0:
            break                                  # zero padding after the last event
        digest = ""
        for _ in range(count):
            (alg,) = struct.unpack_from("<H", log, at)
            width = sizes.get(alg, _SIZES.get(alg))
            if width is None:
                raise ValueError(f"digest algorithm 0x{alg:04x} of unknown size")
            if alg == SHA256:
                digest = bytes(log[at + 2:at + 2 + width]).hex()
            at += 2 + width
        (size,) = struct.unpack_from("<I", log, at)
        data = bytes(log[at + 4:at + 4 + size])
        if len(data) != size:
            raise ValueError("the last event is cut short")
        at += 4 + size
        events.append(Event(pcr, TYPES.get(etype, f"0x{etype:08x}"), digest,
                            describe(etype, data)))
    return events


def replay(events: list[Event]) -> dict[int, str]:
    """The sha256 PCRs the events add up to (those the log extends)."""
    pcrs: dict[int, bytes] = {}
    for ev in events:
        if ev.type == TYPES[EV_NO_ACTION] or not ev.sha256:
            continue
        old = pcrs.get(ev.pcr, bytes(32))
        pcrs[ev.pcr] = hashlib.sha256(old + bytes.fromhex(ev.sha256)).digest()
    return {n: v.hex() for n, v in sorted(pcrs.items())}


def describe(etype: int, data: bytes) -> str:
    """A short human text for the event's data."""
    try:
        if etype in _TEXT:
            return _printable(data.rstrip(b"\0").decode("ascii", errors="replace"))
        if etype in _VARIABLES and len(data) >= 32:
            (chars,) = struct.unpack_from("<Q", data, 16)
            return data[32:32 + 2 * chars].decode("utf-16-le", errors="replace")
        if etype in _IMAGES and len(data) >= 32:
            (path_len,) = struct.unpack_from("<Q", data, 24)
            return _device_path(data[32:32 + path_len]) or "an EFI image"
        if etype == 0x8:                            # EV_S_CRTM_VERSION: UTF-16
            return data.decode("utf-16-le", errors="replace").rstrip("\0") or "(empty)"
        if etype == 0x80000008 and len(data) == 16:  # base, length of a firmware volume
            base, length = struct.unpack("<QQ", data)
            return f"firmware volume at 0x{base:x}, {length} bytes"
        if etype == 0x80000006:
            return "the disk's GPT"
        if etype == 0x4:
            return "separator"
    except (struct.error, UnicodeDecodeError):
        pass
    return f"{len(data)} bytes"


def _device_path(path: bytes) -> str:
    """The file path nodes (type 4, subtype 4: UTF-16) of a UEFI device path."""
    at, parts = 0, []
    while at + 4 <= len(path):
        kind, sub, length = struct.unpack_from("<BBH", path, at)
        if kind == 0x7F or length < 4:
            break
        if (kind, sub) == (4, 4):
            parts.append(path[at + 4:at + length].decode("utf-16-le",
                                                         errors="replace").rstrip("\0"))
        at += length
    return "".join(parts)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "." for c in text)
