"""Ending a VM migration its daemon lost track of: the source daemon died, or lost the
destination, between getting the destination ready and dropping its own copy.

Before the source asks the destination to get ready, it writes a marker in the
instance's dir (``migrating.json``: the remote, whether the guest ran). The copy here
goes only once the destination runs the guest, and the destination's QEMU keeps the
guest paused until told to finish (``-S``), so while the marker exists the source
decides, from QEMU's own migration status here and the destination's answer:

- the migration here still runs (no one watches it): cancel it (not past post-copy);
- it completed (or QEMU here is gone): the destination may hold the whole guest: ask it
  to finish; once it says the instance runs there, drop the copy here; if it has no such
  instance, resume here;
- it failed, was cancelled or never began: resume here, and tell the destination to
  drop its copy.

An answer that does not come (the destination is down, the link is cut) keeps the
marker (and a completed guest paused here); ``Recovery`` asks again in the background.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cumulo.client import APIError, Client, DaemonUnreachable
from cumulo.domain.lifecycle import State
from cumulo.domain.models import Instance
from cumulo.errors import ConflictError, CumuloError, NotFoundError

if TYPE_CHECKING:
    from cumulo.services.migrations import MigrationService

log = logging.getLogger(__name__)
MARKER = "migrating.json"
PEER_TIMEOUT = 10.0   # seconds for each question to the destination
RETRY = 5.0           # seconds between rounds while an answer is missing
SENDING, ABORTING = "sending", "aborting"


class Outcome(Enum):
    MOVED = "moved"       # the guest runs on the destination; nothing of it is left here
    STAYED = "stayed"     # the guest is here (running as before), nothing of it there
    PENDING = "pending"   # the destination did not answer: asked again later


def _path(mig: MigrationService, inst: Instance) -> Path:
    return mig.instances.instances_dir / inst.host_id / MARKER


def mark(mig: MigrationService, inst: Instance, remote: str, was_running: bool,
         phase: str = SENDING) -> None:
    path = _path(mig, inst)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"remote": remote, "was_running": was_running,
                               "phase": phase}))
    tmp.replace(path)


def read(mig: MigrationService, inst: Instance) -> dict[str, Any] | None:
    try:
        data = json.loads(_path(mig, inst).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def clear(mig: MigrationService, inst: Instance) -> None:
    _path(mig, inst).unlink(missing_ok=True)


class Recovery:
    """Settles unfinished outgoing migrations: at once, and again while answers miss."""

    def __init__(self, mig: MigrationService) -> None:
        self.mig = mig
        self._pending: set[tuple[str, str]] = set()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None

    # --- one migration ---
    def settle(self, inst: Instance) -> tuple[Outcome, str]:
        """End the migration of ``inst`` one way or the other (caller holds its lock);
        returns the outcome and how QEMU here said it ended."""
        marker = read(self.mig, inst)
        if marker is None:
            return Outcome.STAYED, "none"
        name, remote_name = inst.name, str(marker.get("remote"))
        try:
            remote = self.mig.hosts.get_remote(remote_name)
        except NotFoundError:
            remote = None   # removed meanwhile: nothing to ask, the guest stays here
        status = "cancelled"
        rc = None if remote is None else self.mig._client(remote, PEER_TIMEOUT)
        try:
            if marker.get("phase") != ABORTING:
                status = self.mig._driver(inst.type).end_outgoing(inst.host_id)
                log.info("migration of %s to %s: QEMU here says %s", name, remote_name,
                         status)
                if status in ("completed", "gone") and rc is not None:
                    there = self._finish_there(rc, inst)
                    if there is None:
                        return Outcome.PENDING, status
                    if there:
                        self.mig._forget(inst)
                        self.mig.instances.events.lifecycle("migrated", inst.project, name,
                                                            remote=remote_name)
                        log.info("migration of %s to %s: finished, it runs there", name,
                                 remote_name)
                        return Outcome.MOVED, status
                if status == "gone":
                    clear(self.mig, inst)
                    self.mig.instances.store.update_instance(
                        inst.project, name, state=State.ERROR,
                        last_error=f"its QEMU died while it migrated to {remote_name}")
                    return Outcome.STAYED, status
                self._resume_here(inst, bool(marker.get("was_running")))
                mark(self.mig, inst, remote_name, bool(marker.get("was_running")), ABORTING)
            if rc is not None and not self._drop_there(rc, inst):
                return Outcome.PENDING, status
            clear(self.mig, inst)
            log.info("migration of %s to %s: undone, it runs here", name, remote_name)
            return Outcome.STAYED, status
        finally:
            if rc is not None:
                rc.close()

    def _resume_here(self, inst: Instance, was_running: bool) -> None:
        driver = self.mig._driver(inst.type)
        driver.resume_after_failed_send(inst.host_id, was_running)
        self.mig.instances.store.update_instance(
            inst.project, inst.name, state=State.RUNNING if was_running else State.PAUSED)

    @staticmethod
    def _finish_there(rc: Client, inst: Instance) -> bool | None:
        """Ask the destination to run the guest it received: True once it runs there,
        False if it has no such instance, None if it did not answer (or cannot say)."""
        params = {"project": inst.project}
        try:
            rc.request("POST", f"/migrations/incoming/{inst.name}/finish", params=params)
            return True
        except APIError:
            pass   # not (or no longer) being received there: see what it has
        except CumuloError:
            return None
        try:
            there = rc.get(f"/instances/{inst.name}", params=params)
        except APIError as err:
            return False if err.status == 404 else None
        except CumuloError:
            return None
        return True if there.get("state") in ("running", "paused") else None

    @staticmethod
    def _drop_there(rc: Client, inst: Instance) -> bool:
        """Tell the destination to drop what it received; whether it answered."""
        try:
            rc.request("DELETE", f"/migrations/incoming/{inst.name}",
                       params={"project": inst.project})
        except APIError as err:   # not being received there (any more): nothing to drop
            log.info("migration of %s: the destination says %s", inst.name, err)
        except (DaemonUnreachable, CumuloError, OSError):
            return False
        return True

    # --- in the background ---
    def start(self) -> None:
        """At daemon start: settle every migration a marker says was under way."""
        found = [i for i in self.mig.instances.store.list_instances()
                 if read(self.mig, i) is not None]
        if found:
            log.warning("found %d unfinished outgoing migration(s): %s", len(found),
                        ", ".join(f"{i.project}/{i.name}" for i in found))
        for inst in found:
            self.later(inst)

    def later(self, inst: Instance) -> None:
        """Settle ``inst`` in the background (until the destination answers)."""
        with self._guard:
            self._pending.add((inst.project, inst.name))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="migration-recovery")
                self._thread.start()

    def _run(self) -> None:
        while True:
            with self._guard:
                todo = sorted(self._pending)
                if not todo:
                    self._thread = None
                    return
            for project, name in todo:
                if self._round(project, name):
                    with self._guard:
                        self._pending.discard((project, name))
            with self._guard:
                if not self._pending:
                    self._thread = None
                    return
            time.sleep(RETRY)

    def _round(self, project: str, name: str) -> bool:
        """One try; whether this migration is settled (or gone)."""
        try:
            inst = self.mig.instances.store.get_instance(project, name)
        except NotFoundError:
            return True
        with self.mig.instances._locked(inst):
            try:
                outcome, _ = self.settle(self.mig.instances.store.get_instance(project, name))
            except NotFoundError:
                return True
            except CumuloError as err:
                log.warning("migration of %s: cannot settle it yet: %s", name, err)
                return False
        if outcome == Outcome.PENDING:
            log.info("migration of %s: the destination does not answer; asking again in"
                     " %.0fs", name, RETRY)
        return outcome != Outcome.PENDING


def remote_silent(remote: str, name: str, err: BaseException) -> ConflictError:
    """The error of a migration whose state went over but whose end the destination did
    not confirm (the guest waits paused here)."""
    return ConflictError(f"{remote} did not answer at the end of the migration ({err}):"
                       f" {name} waits paused here until {remote} says whether it runs"
                       f" there (asked again every {RETRY:.0f}s)")
