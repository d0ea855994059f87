"""The TCG RAM padding across migrations (qemu_cmd.TCG_RAM_PAD): a VM recorded without it
moves with its vCPUs stopped, and a destination takes the source's padding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cumulo.drivers.base import RunState, RunStatus
from cumulo.drivers.registry import DriverContext
from cumulo.drivers.vm import migration
from cumulo.drivers.vm.accel import Accel
from cumulo.drivers.vm.driver import VmDriver
from cumulo.drivers.vm.qemu_cmd import MIB, TCG_RAM_PAD, Io, Machine, VmSpec
from cumulo.host.info import HostInfo


def driver_with(tmp_path: Path, pad: int, accel: Accel = Accel.TCG) -> VmDriver:
    driver = VmDriver(DriverContext(state_dir=tmp_path / "s", runtime_dir=tmp_path / "r",
                                    cgroup_parent="x", host=HostInfo()))
    vm = VmSpec(name="a", memory=128 * MIB, vcpus=1, accel=accel, machine=Machine.MICROVM,
                io=Io.PARAVIRT, kernel=tmp_path, initrd=tmp_path, append="",
                serial_log=tmp_path / "console.log", qmp_socket=tmp_path / "q",
                pidfile=tmp_path / "p", ram_pad=pad)
    driver._records.put("a", {"instance_dir": str(tmp_path), "vm": vm.to_dict()})
    return driver


@pytest.mark.parametrize(("pad", "accel", "live"), [
    (0, Accel.TCG, False),           # booted before the padding: pre-copy would lose stores
    (TCG_RAM_PAD, Accel.TCG, True),
    (0, Accel.KVM, True),            # KVM tracks dirty pages itself
])
def test_send_is_live_only_where_the_guest_s_stores_are_all_tracked(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pad: int, accel: Accel,
        live: bool) -> None:
    driver = driver_with(tmp_path, pad, accel)
    monkeypatch.setattr(driver, "state", lambda host_id: RunState(RunStatus.RUNNING, 1))
    sent: dict[str, Any] = {}

    def fake_send(sock: Path, uri: str, **kw: Any) -> migration.MigrationStats:
        sent.update(kw)
        return migration.MigrationStats(status="completed")

    monkeypatch.setattr(migration, "send", fake_send)
    driver.send("a", "tcp:127.0.0.1:1", live=True, bandwidth=None,
                progress=lambda f, m: None, cancelled=lambda: False)
    assert sent["live"] is live


def test_a_destination_takes_the_sources_padding_but_no_other_size(tmp_path: Path) -> None:
    driver = driver_with(tmp_path, TCG_RAM_PAD)
    padded = driver.signature("a")
    assert padded.endswith(f"/ram+{TCG_RAM_PAD}")
    old = padded.removesuffix(f"/ram+{TCG_RAM_PAD}")   # a source VM booted before
    driver.match_source("a", old)
    assert driver.signature("a") == old and driver._vmspec("a").ram_pad == 0
    driver.match_source("a", padded)
    assert driver.signature("a") == padded
    driver.match_source("a", old + "/ram+1048576")      # a remote cannot ask for more RAM
    assert driver._vmspec("a").ram_pad == TCG_RAM_PAD
