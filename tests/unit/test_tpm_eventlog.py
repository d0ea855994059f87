"""The TCG2 event log parser and replay, on a log written here in the layout the UEFI
spec gives (the system test reads a real one from OVMF and GRUB); and the baseline
store (kept per instance, gone with it)."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest

from cumulo.domain.models import Image, Instance
from cumulo.drivers.vm import eventlog
from cumulo.errors import InvalidInputError
from cumulo.store.repo import Store
from cumulo.store.tpm_baselines import Baseline, TpmBaselineStore


def _spec_event(algs: list[tuple[int, int]]) -> bytes:
    spec = (eventlog.SPEC_ID + struct.pack("<IBBBBI", 0, 0, 2, 0, 2, len(algs))
            + b"".join(struct.pack("<HH", a, s) for a, s in algs) + b"\0")
    return struct.pack("<II", 0, eventlog.EV_NO_ACTION) + bytes(20) \
        + struct.pack("<I", len(spec)) + spec


def _event(pcr: int, etype: int, data: bytes, measured: bytes | None = None) -> bytes:
    blob = data if measured is None else measured
    digests = [(eventlog.SHA1, hashlib.sha1(blob).digest()),
               (eventlog.SHA256, hashlib.sha256(blob).digest())]
    return (struct.pack("<III", pcr, etype, len(digests))
            + b"".join(struct.pack("<H", a) + d for a, d in digests)
            + struct.pack("<I", len(data)) + data)


def _variable(name: str, value: bytes) -> bytes:
    utf16 = name.encode("utf-16-le")
    return bytes(16) + struct.pack("<QQ", len(name), len(value)) + utf16 + value


def _image(path: str) -> bytes:
    node = path.encode("utf-16-le") + b"\0\0"
    device_path = struct.pack("<BBH", 4, 4, 4 + len(node)) + node + struct.pack("<BBH",
                                                                               0x7F, 0xFF, 4)
    return struct.pack("<QQQQ", 0, 0, 0, len(device_path)) + device_path


LOG = (_spec_event([(eventlog.SHA1, 20), (eventlog.SHA256, 32)])
       + _event(0, 0x8, "OVMF 1.0".encode("utf-16-le") + b"\0\0")
       + _event(1, 0x80000001, _variable("SecureBoot", b"\0"))
       + _event(4, 0x80000003, _image(r"\EFI\BOOT\BOOTX64.EFI"), b"grub's PE image")
       + _event(7, 0x4, b"\0\0\0\0")
       + _event(8, 0xD, b"kernel_cmdline: /vmlinuz root=LABEL=cumulo-root ro\0")
       + _event(9, 0xD, b"/boot/vmlinuz-6.1.0-28-amd64\0", b"the kernel's bytes")
       + bytes(64))                                  # the zero padding the kernel shows


def test_a_log_parses_into_its_events_with_readable_descriptions() -> None:
    events = eventlog.parse(LOG)
    assert [(e.pcr, e.type, e.description) for e in events] == [
        (0, "EV_S_CRTM_VERSION", "OVMF 1.0"),
        (1, "EV_EFI_VARIABLE_DRIVER_CONFIG", "SecureBoot"),
        (4, "EV_EFI_BOOT_SERVICES_APPLICATION", r"\EFI\BOOT\BOOTX64.EFI"),
        (7, "EV_SEPARATOR", "separator"),
        (8, "EV_IPL", "kernel_cmdline: /vmlinuz root=LABEL=cumulo-root ro"),
        (9, "EV_IPL", "/boot/vmlinuz-6.1.0-28-amd64"),
    ]
    assert events[5].sha256 == hashlib.sha256(b"the kernel's bytes").hexdigest()


def test_replay_gives_the_pcrs_and_a_changed_kernel_changes_pcr_9_only() -> None:
    pcrs = eventlog.replay(eventlog.parse(LOG))
    assert sorted(pcrs) == [0, 1, 4, 7, 8, 9]
    kernel = hashlib.sha256(b"the kernel's bytes").digest()
    assert pcrs[9] == hashlib.sha256(bytes(32) + kernel).hexdigest()
    other = LOG.replace(_event(9, 0xD, b"/boot/vmlinuz-6.1.0-28-amd64\0",
                               b"the kernel's bytes"),
                        _event(9, 0xD, b"/boot/vmlinuz-6.1.0-28-amd64\0",
                               b"the kernel's bytes, and more"))
    changed = eventlog.replay(eventlog.parse(other))
    assert [n for n in pcrs if pcrs[n] != changed[n]] == [9]


@pytest.mark.parametrize("bad", [b"", b"\0" * 40, LOG[:-70], b"not a log at all" * 4])
def test_what_is_not_a_tcg2_log_is_one_clear_error(bad: bytes) -> None:
    with pytest.raises(InvalidInputError, match="the TPM event log is not a TCG2 log"):
        eventlog.parse(bad)


def test_a_baseline_is_kept_per_instance_and_goes_with_it(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    img = store.put_image(Image(fingerprint="f" * 64))
    store.add_instance(Instance(project="default", name="v1", type="vm", image=img.fingerprint))
    base = TpmBaselineStore(store.db)
    assert base.get("default", "v1") is None
    first = base.put("default", "v1", Baseline({0: "aa", 9: "bb"}, [{"pcr": 9}]))
    assert (first.pcrs, first.events, first.created_at is not None) == \
        ({0: "aa", 9: "bb"}, [{"pcr": 9}], True)
    base.put("default", "v1", Baseline({9: "cc"}))              # a new one replaces it
    again = base.get("default", "v1")
    assert again is not None and (again.pcrs, again.events) == ({9: "cc"}, [])
    store.delete_instance("default", "v1")
    store.add_instance(Instance(project="default", name="v1", type="vm", image=img.fingerprint))
    assert base.get("default", "v1") is None
