"""Saving and moving a running VM with QEMU's migration stream.

- Checkpoint: stop the vCPUs, stream the state with ``migrate exec:cat > FILE`` (QEMU 7.2
  has no ``file:`` URI), then the driver quits QEMU.
- Restore: a QEMU on the same spec started with ``-incoming defer`` and fed with
  ``migrate-incoming exec:cat FILE``, then ``cont``.
- Live migration: pre-copy over TCP with auto-converge; the destination is a QEMU with
  ``-incoming defer`` listening on ``tcp:ADDR:PORT``; it starts the vCPUs itself once the
  last dirty pages arrived (the source's run state travels in the stream).

Only RAM and device state move: VMs boot an initramfs today. Once VMs get disks that are
not on shared storage, each must be mirrored to the destination over NBD first
(``nbd-server-start`` + ``nbd-server-add`` there, ``blockdev-mirror`` here, then migrate).
"""

from __future__ import annotations

import contextlib
import logging
import shlex
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from cumulo.drivers.vm import qmp
from cumulo.drivers.vm.qemu_cmd import MIB, VmSpec, build_argv
from cumulo.errors import ConflictError, DriverError
from cumulo.host import space

POLL = 0.1
UNLIMITED = 100 << 30          # bytes/s: QEMU's default cap (32 MiB/s in 7.2) is far too low
SAVE_TIMEOUT = 300.0
INCOMING_TIMEOUT = 600.0
TERMINAL = ("completed", "failed", "cancelled")
STALL_TIMEOUT = 30.0           # no byte through for this long: the link is gone, cancel
SETTLE_TIMEOUT = 60.0

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MigrationStats:
    """What QEMU reports about one migration (``query-migrate``)."""

    status: str
    total_time_ms: int | None = None
    downtime_ms: int | None = None
    setup_time_ms: int | None = None
    transferred: int = 0      # bytes on the wire
    remaining: int = 0        # bytes of RAM still to send in this pass
    ram_total: int = 0        # guest RAM
    passes: int = 0           # dirty-memory syncs; 1 means a single pass
    error: str = ""
    postcopy: bool = False    # switched to post-copy (the destination ran the guest early)
    postcopy_requests: int = 0  # pages the destination asked for after the switch

    @classmethod
    def from_qmp(cls, d: dict[str, Any]) -> MigrationStats:
        ram = d.get("ram") or {}
        return cls(status=str(d.get("status", "none")), total_time_ms=d.get("total-time"),
                   downtime_ms=d.get("downtime"), setup_time_ms=d.get("setup-time"),
                   transferred=int(ram.get("transferred", 0)),
                   remaining=int(ram.get("remaining", 0)), ram_total=int(ram.get("total", 0)),
                   passes=int(ram.get("dirty-sync-count", 0)),
                   error=str(d.get("error-desc", "")),
                   postcopy_requests=int(ram.get("postcopy-requests", 0)))

    @property
    def fraction(self) -> float:
        """How far the current pass is, 0..1 (a fresh pass starts lower again)."""
        if self.status == "completed":
            return 1.0
        if not self.ram_total:
            return 0.0
        return max(0.0, min(1.0, 1 - self.remaining / self.ram_total))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def incoming_argv(vm: VmSpec, qemu: str, autostart: bool = True) -> list[str]:
    """The VM's own command line, waiting for state (``-incoming defer``), console appended.

    ``autostart=False`` (``-S``): the guest stays paused once the state is in, until the
    source's daemon says the migration is finished (``cont``): never running on two hosts.
    """
    argv = build_argv(vm, qemu)
    i = argv.index("-serial")
    if argv[i + 1].startswith("file:"):
        path = str(vm.serial_log).replace(",", ",,")
        argv[i:i + 2] = ["-chardev", f"file,id=serial0,path={path},append=on",
                         "-serial", "chardev:serial0"]
    else:  # the interactive console's socket chardev, which logs: append to its log
        j = next(k for k, a in enumerate(argv) if a.startswith("socket,id=console,"))
        argv[j] += ",logappend=on"
    i = argv.index("-daemonize")
    argv[i:i] = ["-incoming", "defer", *([] if autostart else ["-S"])]
    return argv


def _stats(sock: Path) -> MigrationStats:
    return MigrationStats.from_qmp(qmp.query_migrate(sock))


def send(sock: Path, uri: str, *, live: bool, bandwidth: int | None = None,
         on_progress: Callable[[MigrationStats], None] | None = None,
         cancelled: Callable[[], bool] = lambda: False,
         timeout: float = INCOMING_TIMEOUT, postcopy: bool = False) -> MigrationStats:
    """Send the VM's state to ``uri`` and wait for the end.

    ``live``: pre-copy while the guest runs (auto-converge throttles a guest that dirties
    memory faster than the link); otherwise the vCPUs are stopped first (one pass). On
    success the source QEMU is left paused ("postmigrate"); on failure or cancel it is
    left as it was, except that a non-live send leaves it stopped (the caller resumes).
    ``cancelled`` is polled: ``migrate_cancel``, then this waits for QEMU to say so.
    ``postcopy`` (live only; the destination must allow it too, see ``allow_postcopy``):
    when the first pass is through and pages are still dirty, switch to post-copy; the
    guest then runs on the destination, which pulls the pages it still lacks, and the
    migration can no longer be cancelled.
    """
    postcopy = postcopy and live
    qmp.migrate_set_capabilities(sock, {"auto-converge": live, "postcopy-ram": postcopy})
    qmp.migrate_set_parameters(sock, {"max-bandwidth": bandwidth or UNLIMITED})
    if not live:
        qmp.stop(sock)
    qmp.migrate(sock, uri)
    deadline = time.monotonic() + timeout
    asked_cancel = switched = stalled = False
    moved, moved_at = -1, time.monotonic()
    while True:
        try:
            st = _stats(sock)
        except qmp.QmpTimeout as err:
            # QEMU blocked (a drain waiting on the disk mirror's cut NBD link): no
            # progress either; the recovery settles it once QEMU answers again
            if time.monotonic() - moved_at > STALL_TIMEOUT:
                raise _stalled_unanswered() from err
            continue
        if st.transferred != moved:
            moved, moved_at = st.transferred, time.monotonic()
        if st.status == "completed":
            return replace(st, postcopy=switched)
        if st.status == "failed":
            raise DriverError(f"migration failed: {st.error or 'QEMU gave no reason'}")
        if st.status == "cancelled" and stalled:
            raise DriverError(f"the migration stalled (nothing went through for"
                              f" {STALL_TIMEOUT:.0f}s: is the link down?): cancelled")
        if st.status == "cancelled":
            raise ConflictError("the migration was cancelled: the instance stays here")
        if st.status.startswith("postcopy"):
            switched = True   # past the point of no return: no cancel any more
            if time.monotonic() > deadline:
                raise DriverError(f"post-copy did not finish in {timeout:.0f}s ({st.status})")
        elif not asked_cancel and st.status == "active" and \
                time.monotonic() - moved_at > STALL_TIMEOUT:
            try:
                qmp.migrate_cancel(sock)
            except qmp.QmpTimeout as err:   # it blocked between the two questions
                raise _stalled_unanswered() from err
            asked_cancel = stalled = True
        elif not asked_cancel and (cancelled() or time.monotonic() > deadline):
            qmp.migrate_cancel(sock)
            asked_cancel = True
            if time.monotonic() > deadline:
                raise DriverError(f"migration did not finish in {timeout:.0f}s: cancelled")
        elif postcopy and not switched and st.status == "active" and st.passes >= 2:
            qmp.execute(sock, "migrate-start-postcopy")
            switched = True
        if on_progress is not None:
            on_progress(replace(st, postcopy=switched))
        time.sleep(POLL)


def _stalled_unanswered() -> DriverError:
    return DriverError(f"the migration stalled (nothing went through for {STALL_TIMEOUT:.0f}s:"
                       " is the link down?) and QEMU does not answer (it waits on the link);"
                       " it is settled once QEMU answers again")


def settle(sock: Path, timeout: float = SETTLE_TIMEOUT) -> str:
    """End an outgoing migration whose daemon stopped watching it (it died, or lost the
    peer): cancel it unless past the point of no return (post-copy) and wait for QEMU's
    last word: "completed", "failed", "cancelled" or "none" (it never began)."""
    deadline = time.monotonic() + timeout
    asked = False
    while True:
        st = _stats(sock)
        if st.status in (*TERMINAL, "none"):
            return st.status
        if not asked and not st.status.startswith("postcopy"):
            qmp.migrate_cancel(sock)
            asked = True
        if time.monotonic() > deadline:
            raise DriverError(f"the migration did not end in {timeout:.0f}s ({st.status})")
        time.sleep(POLL)


def allow_postcopy(sock: Path) -> None:
    """On an incoming QEMU, before ``listen``: accept a switch to post-copy."""
    qmp.migrate_set_capabilities(sock, {"postcopy-ram": True})


def save(sock: Path, path: Path) -> MigrationStats:
    """Stop the vCPUs and write the whole state to ``path`` (through a temp file)."""
    tmp = path.with_name(path.name + ".part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        st = send(sock, "exec:cat > " + shlex.quote(str(tmp)), live=False,
                  timeout=SAVE_TIMEOUT)
        tmp.rename(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise DriverError(f"cannot write checkpoint {path}: {err}") from err
    except DriverError as err:   # QEMU says only that its writer died: was the disk full?
        full = space.looks_full(tmp.parent)
        tmp.unlink(missing_ok=True)
        if full:
            raise DriverError(f"cannot write checkpoint {path}: {space.ENOSPC_TEXT}") from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return st


def wait_incoming(sock: Path, resume: bool, timeout: float = INCOMING_TIMEOUT) -> str:
    """Wait until an incoming QEMU has the whole state; ``resume`` starts a paused guest.

    Returns QEMU's run state afterwards ("running" or "paused").
    """
    deadline = time.monotonic() + timeout
    while (status := qmp.query_status(sock)) == "inmigrate":
        st = _stats(sock)
        if st.status in ("failed", "cancelled"):
            raise DriverError(f"incoming migration {st.status}: {st.error or 'stream ended'}")
        if time.monotonic() > deadline:
            raise DriverError(f"incoming migration did not finish in {timeout:.0f}s")
        time.sleep(POLL)
    if resume and status != "running":
        qmp.cont(sock)
        status = qmp.query_status(sock)
    return status


def load(sock: Path, path: Path) -> str:
    """Feed a checkpoint file to a QEMU waiting with ``-incoming defer``, then resume."""
    qmp.migrate_incoming(sock, "exec:cat " + shlex.quote(str(path)))
    return wait_incoming(sock, resume=True, timeout=SAVE_TIMEOUT)


def _free_port(address: str) -> int:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        return int(s.getsockname()[1])


def listen(sock: Path, address: str, attempts: int = 3) -> str:
    """Make an incoming QEMU listen on ``address``; returns the URI the source sends to."""
    host = f"[{address}]" if ":" in address else address
    last: DriverError | None = None
    for _ in range(attempts):
        try:
            uri = f"tcp:{host}:{_free_port(address)}"
        except OSError as err:
            raise DriverError(f"cannot listen for migrations on {address}: {err}") from err
        try:
            qmp.migrate_incoming(sock, uri)
            return uri
        except DriverError as err:   # the port was taken in between: try another
            last = err
    raise DriverError(f"cannot listen for migrations on {address}: {last}")


# --- disks that are not shared: mirrored over NBD before the RAM moves -----------------
# The destination's QEMU (waiting with -incoming) exports its root disk over NBD; the
# source mirrors its whole root disk into it (sync=full: the two hosts' base disks are
# built separately and need not be identical), keeps it in step while the guest runs,
# and after the RAM migration completed ends the job without switching to the target
# (block-job-cancel on a ready mirror), as QEMU documents for non-shared storage.
NBD_EXPORT = "cumulo-root"
MIRROR_JOB = "cumulo-mirror"
MIRROR_NODE = "cumulo-mirror-target"


def serve_disk(sock: Path, address: str, node: str) -> str:
    """Export ``node`` of an incoming QEMU over NBD on ``address``; returns ``nbd:HOST:PORT``."""
    port = _free_port(address)
    qmp.execute(sock, "nbd-server-start",
                {"addr": {"type": "inet", "data": {"host": address, "port": str(port)}}})
    qmp.execute(sock, "block-export-add", {"type": "nbd", "id": NBD_EXPORT, "node-name": node,
                                           "name": NBD_EXPORT, "writable": True})
    return f"nbd:{address}:{port}"


def stop_serving(sock: Path) -> None:
    qmp.execute(sock, "block-export-del", {"id": NBD_EXPORT})
    qmp.execute(sock, "nbd-server-stop")


def _jobs(sock: Path) -> dict[str, dict[str, Any]]:
    return {str(j.get("device")): j for j in qmp.execute(sock, "query-block-jobs") or []}


def mirror_disk(sock: Path, node: str, target: str, progress: Callable[[float, str], None],
                timeout: float = INCOMING_TIMEOUT,
                cancelled: Callable[[], bool] = lambda: False) -> None:
    """Copy ``node`` into the NBD export ``target`` until source and copy are in step."""
    _, host, port = target.split(":", 2)
    qmp.execute(sock, "blockdev-add", {"driver": "nbd", "node-name": MIRROR_NODE,
                                       "server": {"type": "inet", "host": host, "port": port},
                                       "export": NBD_EXPORT})
    qmp.execute(sock, "blockdev-mirror", {"job-id": MIRROR_JOB, "device": node,
                                          "target": MIRROR_NODE, "sync": "full",
                                          "copy-mode": "write-blocking"})
    deadline = time.monotonic() + timeout
    while True:
        job = _jobs(sock).get(MIRROR_JOB)
        if job is None:
            raise DriverError("the disk mirror stopped before it was in step")
        if job.get("ready"):
            return
        done, total = int(job.get("offset", 0)), int(job.get("len", 0)) or 1
        progress(0.3 * done / total, f"disk: {done // MIB} of {total // MIB} MiB")
        if time.monotonic() > deadline:
            raise DriverError(f"the disk mirror was not in step after {timeout:.0f}s")
        if cancelled():
            raise ConflictError("the migration was cancelled: the instance stays here")
        time.sleep(POLL)


def send_with_disk(sock: Path, node: str, ram: str, disk: str,
                   progress: Callable[[float, str], None],
                   cancelled: Callable[[], bool], **send_kw: Any) -> MigrationStats:
    """Mirror the root disk ``node`` into the NBD export ``disk``, then ``send`` the RAM to
    ``ram``; the mirror ends either way (the source keeps its own disk).

    When the send failed, its error is the one raised: ending the abandoned mirror can
    fail too (with the link down, QEMU may wait for the NBD connection and not answer
    QMP), and the recovery ends it later (``end_outgoing``).
    """
    done = False
    try:
        mirror_disk(sock, node, disk, progress, cancelled=cancelled)
        stats = send(sock, ram, cancelled=cancelled, **send_kw)
        done = True
    finally:
        try:
            end_mirror(sock, force=not done)
        except DriverError as err:
            if done:
                raise
            log.warning("the abandoned disk mirror did not end yet (ended later): %s", err)
    return stats


def end_mirror(sock: Path, force: bool = False) -> None:
    """Stop the mirror job (the source keeps its own disk) and drop the NBD client.

    ``force``: the copy is abandoned (a cancel or failure), do not wait for it to be in step.
    """
    if MIRROR_JOB in _jobs(sock):
        # on a ready mirror this ends once the copy is in step: the target is complete
        qmp.execute(sock, "block-job-cancel", {"device": MIRROR_JOB, "force": force})
        deadline = time.monotonic() + 60
        while MIRROR_JOB in _jobs(sock):
            if time.monotonic() > deadline:
                raise DriverError("the disk mirror job did not end")
            time.sleep(POLL)
    with contextlib.suppress(DriverError):  # never added
        qmp.execute(sock, "blockdev-del", {"node-name": MIRROR_NODE})

