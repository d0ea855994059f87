"""Moving an instance by state files the source carries to the destination (containers).

QEMU streams a VM's state itself; CRIU writes files. So for a driver that offers
`cumulo.drivers.migratable.StateArchive`, the source drives these steps over the
destination's API (its token), after ``POST /migrations/incoming`` recorded the
instance there:

- ``--live`` (default): a pre-dump of the memory while the container runs, sent as
  ``state/pre``; then the final dump (only pages changed since, plus the root's
  changes; the container is stopped from here on) sent as ``state/final``; ``finish``
  restores it there from both, PID 1 and all, under the destination's conmon.
- ``--stop-first`` (cold): stop, send the root's changes as ``state/root``, ``finish``
  starts it there again (its processes restart; a stopped container stays stopped).

Any failure before the destination runs it aborts the destination and puts the
source back as it was (restored from its own final dump, or started again), so the
instance exists on exactly one host. Figures: ``total_time_ms``, ``downtime_ms`` (from
the final freeze to running there), ``transferred`` (bytes sent), ``passes``.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

from cumulo.client import Client
from cumulo.domain.lifecycle import State
from cumulo.domain.models import Instance
from cumulo.drivers.migratable import StateArchive
from cumulo.errors import CumuloError, InvalidInputError, UnsupportedError
from cumulo.services.instances import InstanceService
from cumulo.services.operations import Progress

PARTS = ("pre", "final", "root")
COLD_STOP_TIMEOUT = 10.0


def part_path(instance_dir: Path, part: str) -> Path:
    """Where the destination keeps an uploaded part."""
    if part not in PARTS:
        raise InvalidInputError(f"unknown state part {part!r}: one of {', '.join(PARTS)}")
    return instance_dir / f"incoming-{part}.tar"


def _upload(rc: Client, project: str, name: str, part: str, path: Path) -> int:
    with open(path, "rb") as f:   # the client sends a file in pieces (chunked)
        rc.request("PUT", f"/migrations/incoming/{name}/state/{part}",
                   params={"project": project}, content=f,
                   headers={"content-type": "application/x-tar"})
    return path.stat().st_size


def cannot_live(name: str, err: CumuloError) -> UnsupportedError:
    return UnsupportedError(f"{err}; instance {name!r} cannot migrate with its state here:"
                            " use --stop-first to stop it, move it and start it there"
                            " (its processes restart)")


def send(instances: InstanceService, driver: StateArchive, inst: Instance, rc: Client,
         live: bool, progress: Progress) -> dict[str, Any]:
    """Carry ``inst`` to the destination behind ``rc`` (already told to expect it) and
    run it there; on failure the source is as it was and the error propagates."""
    work = instances.instances_dir / inst.host_id / "migration"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        if live:
            return _send_state(instances, driver, inst, rc, work, progress)
        return _send_cold(instances, driver, inst, rc, work, progress)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _finish(rc: Client, inst: Instance, start: bool) -> None:
    rc.request("POST", f"/migrations/incoming/{inst.name}/finish",
               params={"project": inst.project, "start": start})


def _send_state(instances: InstanceService, driver: StateArchive, inst: Instance,
                rc: Client, work: Path, progress: Progress) -> dict[str, Any]:
    t0 = time.monotonic()
    pre, pre_tar = work / "pre" / "images", work / "pre.tar"
    progress(0.1, "pre-dump: saving memory while it runs")
    sent, passes, note = 0, 2, None
    stats: dict[str, Any] = {}
    try:
        if inst.state == State.PAUSED:
            raise UnsupportedError("no pre-dump: the container is paused")
        stats = driver.pre_dump(inst.host_id, pre, pre_tar)
    except UnsupportedError as err:   # CRIU can dump, but not track changes: one pass
        note, passes = f"one pass, {err}", 1
    except CumuloError as err:
        raise cannot_live(inst.name, err) from err
    if passes == 2:
        progress(0.4, f"sending the pre-dump ({pre_tar.stat().st_size >> 10} KiB)")
        sent = _upload(rc, inst.project, inst.name, "pre", pre_tar)
    progress(0.6, "final dump: the container stops here")
    final = work / "final.tar"
    t_freeze = time.monotonic()
    parent = pre if passes == 2 else None
    try:
        stats |= driver.export_state(inst.host_id, final, parent=parent)
    except CumuloError as err:
        raise cannot_live(inst.name, err) from err
    try:
        progress(0.75, f"sending the final state ({final.stat().st_size >> 10} KiB)")
        sent += _upload(rc, inst.project, inst.name, "final", final)
        progress(0.9, "restoring on the destination")
        _finish(rc, inst, start=True)
    except BaseException:
        with contextlib.suppress(CumuloError):
            rc.request("DELETE", f"/migrations/incoming/{inst.name}",
                       params={"project": inst.project})
        driver.restore(instances._spec(inst), final,  # back here, as it was
                       parent=pre_tar if parent is not None else None)
        raise
    done = time.monotonic()
    return {**stats, "total_time_ms": round((done - t0) * 1000),
            "downtime_ms": round((done - t_freeze) * 1000), "transferred": sent,
            "passes": passes, **({"note": note} if note else {})}


def _send_cold(instances: InstanceService, driver: StateArchive, inst: Instance,
               rc: Client, work: Path, progress: Progress) -> dict[str, Any]:
    t0 = time.monotonic()
    was_running = inst.state in (State.RUNNING, State.PAUSED)
    idriver = instances._driver(inst.type)
    t_stop = time.monotonic()   # it stops serving from the stop signal on
    if was_running:
        progress(0.1, "stopping")
        run = idriver.stop(inst.host_id, COLD_STOP_TIMEOUT, force=False)
        instances.store.update_instance(inst.project, inst.name, state=State.STOPPED,
                                        exit_code=run.exit_code)
    try:
        root = work / "root.tar"
        driver.export_root(inst.host_id, root)
        progress(0.4, f"sending the root's changes ({root.stat().st_size >> 10} KiB)")
        sent = _upload(rc, inst.project, inst.name, "root", root)
        progress(0.8, "starting on the destination" if was_running else "finishing")
        _finish(rc, inst, start=was_running)
    except BaseException:
        with contextlib.suppress(CumuloError):
            rc.request("DELETE", f"/migrations/incoming/{inst.name}",
                       params={"project": inst.project})
        if was_running:
            idriver.start(instances._spec(inst))
            instances.store.update_instance(inst.project, inst.name, state=State.RUNNING,
                                            exit_code=None)
        raise
    done = time.monotonic()
    return {"total_time_ms": round((done - t0) * 1000),
            "downtime_ms": round((done - t_stop) * 1000) if was_running else 0,
            "transferred": sent, "passes": 1, "restarted": was_running}


def finish(instances: InstanceService, driver: StateArchive, inst: Instance,
           start: bool) -> State:
    """On the destination: run the instance from the parts received."""
    instance_dir = instances.instances_dir / inst.host_id
    spec = instances._spec(inst)
    final = part_path(instance_dir, "final")
    if final.is_file():
        pre_tar = part_path(instance_dir, "pre")
        try:
            driver.restore(spec, final, parent=pre_tar if pre_tar.is_file() else None)
        finally:
            final.unlink(missing_ok=True)
            pre_tar.unlink(missing_ok=True)
        return State.RUNNING
    root = part_path(instance_dir, "root")
    if not root.is_file():
        raise InvalidInputError(f"nothing was received for instance {inst.name!r}")
    try:
        driver.import_root(spec, root)
    finally:
        root.unlink(missing_ok=True)
    if not start:
        return State.STOPPED
    instances._driver(inst.type).start(spec)
    return State.RUNNING
