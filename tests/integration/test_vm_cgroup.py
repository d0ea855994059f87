"""The cgroup around a VM's QEMU and swtpm: spawned into it with its limits, read for
usage, found again by a new driver object, removed on delete and on a failed start.

One TCG boot (pc, with a vTPM) shared by the module; the failing start boots nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import psutil
import pytest

from cumulo.domain.limits import Limits
from cumulo.drivers.base import InstanceSpec, RunStatus
from cumulo.drivers.registry import DriverContext
from cumulo.drivers.vm.accel import Accel
from cumulo.drivers.vm.driver import VmDriver
from cumulo.drivers.vm.qemu_cmd import MIB, QEMU_OVERHEAD, TCG_RAM_PAD, TCG_TB_MIB
from cumulo.errors import CumuloError
from cumulo.host import cgroup_limits, cgroups, procs
from tests.integration.test_vm_driver import HOST, Env

pytestmark = [pytest.mark.qemu, pytest.mark.slow, pytest.mark.root]

PARENT = f"cumulo-cgtest-{uuid.uuid4().hex[:8]}"   # own parent: runs beside other tests


@dataclass
class Booted:
    env: Env
    spec: InstanceSpec
    pid: int
    cgroup: str


def cgroup_dirs(path: str) -> list[Path]:
    """Every hierarchy's directory for ``path`` that exists now."""
    return [m / path.strip("/") for m, _c in cgroups.hierarchies()
            if (m / path.strip("/")).is_dir()]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.skip("needs root: creates cgroups")
    top = Path(str(tmp_path_factory.mktemp("vmcg")))
    ctx = DriverContext(state_dir=top / "state", runtime_dir=top / "run",
                        cgroup_parent=PARENT, host=HOST)
    driver = VmDriver(ctx)
    yield Env(ctx, driver, top)
    for host_id in driver.list_host_ids():
        with contextlib.suppress(CumuloError):
            driver.delete(host_id, top / "i" / host_id)
    assert not [p for p in psutil.process_iter(["cmdline"])
                if str(top) in " ".join(p.info["cmdline"] or [])], "QEMU left running"
    shutil.rmtree(top)
    cgroups.remove(f"/{PARENT}/none", PARENT)
    assert not cgroup_dirs(PARENT), "the parent cgroup was left behind"


@pytest.fixture(scope="module")
def booted(env: Env) -> Iterator[Booted]:
    if shutil.which("swtpm") is None:
        pytest.skip("swtpm is not installed")
    spec = replace(env.spec(machine="pc", tpm="on"),
                   limits=Limits(memory=128 * MIB, cpu=1, pids=100))
    env.driver.create(spec)
    state = env.driver.start(spec)
    assert state.status == RunStatus.RUNNING and state.pid
    env.console_until(spec.host_id, b"CUMULO-READY")
    yield Booted(env, spec, state.pid, f"/{PARENT}/{spec.host_id}")
    with contextlib.suppress(CumuloError):
        env.driver.delete(spec.host_id, spec.instance_dir)


def test_qemu_and_its_swtpm_run_in_the_vm_cgroup_with_its_limits(booted: Booted) -> None:
    swtpm = [p for p in psutil.process_iter(["name", "cmdline"]) if p.info["name"] == "swtpm"
             and str(booted.env.top) in " ".join(p.info["cmdline"] or [])]
    assert len(swtpm) == 1
    text = Path(f"/proc/{booted.pid}/cgroup").read_text()
    for controller in ("memory", "cpu", "pids"):   # every hierarchy we limit through
        line = next(ln for ln in text.splitlines()
                    if controller in ln.split(":")[1].split(",") or ln.startswith("0::"))
        assert line.split(":", 2)[2] == booted.cgroup, text
    for pid in (booted.pid, swtpm[0].pid):
        assert cgroups.holds(pid, booted.cgroup)
    vm = booted.env.driver._vmspec(booted.spec.host_id)
    tcg = TCG_RAM_PAD + TCG_TB_MIB * MIB if vm.accel == Accel.TCG else 0
    want = 128 * MIB + tcg + QEMU_OVERHEAD
    assert cgroup_limits.read_limits(booted.cgroup) == {
        "memory_max": want, "cpu_max": 1.0, "pids_max": 100}
    if cgroups.version() == 1:
        mem = cgroups.controller_dir("memory", booted.cgroup)
        assert mem is not None
        assert int((mem / "memory.limit_in_bytes").read_text()) == want


def test_usage_and_details_come_from_the_cgroup_also_for_a_new_driver(booted: Booted) -> None:
    again = VmDriver(booted.env.ctx)          # as after a daemon restart
    assert again.state(booted.spec.host_id).pid == booted.pid
    usage = again.usage(booted.spec.host_id)
    live = cgroups.read_usage(booted.cgroup)
    assert usage.memory_bytes and usage.memory_bytes > 10 * MIB
    assert usage.pids == live.pids and usage.pids is not None
    # QEMU's threads plus swtpm: more than QEMU alone
    assert usage.pids > psutil.Process(booted.pid).num_threads()
    details = again.details(booted.spec.host_id)
    assert details["cgroup"] == booted.cgroup
    assert details["cgroup_limits"]["pids_max"] == 100


def test_delete_removes_the_cgroup_in_every_hierarchy(booted: Booted) -> None:
    assert cgroup_dirs(booted.cgroup)
    booted.env.driver.delete(booted.spec.host_id, booted.spec.instance_dir)
    assert not procs.alive(booted.pid)
    assert not cgroup_dirs(booted.cgroup)


def test_a_qemu_that_fails_to_start_leaves_no_cgroup(env: Env) -> None:
    spec = env.spec(machine="pc")
    env.driver.create(spec)
    host_id = spec.host_id
    qemu = env.driver.qemu
    env.driver.qemu = "/bin/false"
    try:
        with pytest.raises(CumuloError):
            env.driver.start(spec)
    finally:
        env.driver.qemu = qemu
    assert not cgroup_dirs(f"/{PARENT}/{host_id}")
    env.driver.delete(host_id, spec.instance_dir)


def test_the_spawned_process_is_really_limited_by_pids_max(env: Env) -> None:
    """The limit holds, not only its file: 3 processes allowed, a fourth fork fails."""
    path = f"/{PARENT}/pids-{uuid.uuid4().hex[:6]}"
    procs = cgroup_limits.create(path, cgroup_limits.CgroupLimits(pids_max=3))
    try:
        argv = [*cgroup_limits.spawn_prefix(procs), "/bin/busybox", "sh", "-c",
                "for i in 1 2 3 4; do sleep 2 & done; wait"]
        res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert "fork" in res.stderr.lower(), res
    finally:
        # busybox sh exits on the failed fork, so its two sleeps outlive it by up to 2 s
        assert not cgroups.remove(path, wait=10.0)
