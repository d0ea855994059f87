"""The instance driver contract every kind (container, fake, later vm) implements.

Drivers act on the host and never touch the store. Each instance is known to a
driver by ``host_id`` (unique on the host, ``[a-z0-9_-]``), and everything a driver
creates for it lives under ``instance_dir`` or in kernel objects named after it,
so ``delete`` can remove all of it, even after a half-finished ``create``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cumulo.domain.limits import Limits
from cumulo.errors import InvalidStateError, NotFoundError
from cumulo.storage.base import RootSpec


@dataclass(frozen=True)
class InstanceSpec:
    """What a driver needs to build an instance."""

    host_id: str                     # e.g. "default_web": project + "_" + name
    hostname: str                    # the instance name
    instance_dir: Path               # driver-owned directory for this instance
    rootfs: Path                     # the image's root filesystem (never written to)
    command: list[str]               # PID 1 and its arguments
    limits: Limits = field(default_factory=Limits)
    privileged: bool = False         # no user namespace: root inside is root outside
    env: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)  # kind-specific, e.g. vm: accel, machine
    kernel: Path | None = None       # appvm: a built kernel image's boot/ dir; None: Debian's
    # join this existing network namespace instead of a new one (privileged containers only:
    # a user-namespaced one could neither mount /sys nor exec into a netns the host owns)
    netns_path: Path | None = None
    # called with PID 1's host pid once its namespaces exist and before it runs: the
    # service wires NICs into /proc/PID/ns/net there (the netns belongs to the instance)
    on_created: Callable[[int], None] | None = field(default=None, compare=False)
    # (host end name, MAC) of each NIC in order: a VM's taps, made by before_start
    nics: tuple[tuple[str, str], ...] = ()
    # called by drivers that have no PID 1 to wire (VMs) right before the instance starts
    before_start: Callable[[], None] | None = field(default=None, compare=False)
    # the instance's /etc/resolv.conf (its network's dnsmasq); None: the image's own
    resolv_conf: str | None = None
    # the instance's root in a storage pool (clone or copy, size cap); None: the driver's own
    # overlay in instance_dir (no pool, no cap), as before pools existed
    root: RootSpec | None = None
    # volumes to bind-mount into a container: (host dir, path inside), already mounted
    volumes: tuple[tuple[Path, str], ...] = ()
    # host directories bound into a container: (host path, path inside, read-only); given at
    # create only (the container driver keeps them with the instance)
    binds: tuple[tuple[Path, str, bool], ...] = ()
    # volumes a VM gets as disks at start: (device id, volume file, shared by several VMs)
    disks: tuple[tuple[str, Path, bool], ...] = ()
    # SSH public keys for root's authorized_keys (domain/ssh_keys.py), given at create only
    ssh_keys: tuple[str, ...] = ()
    # cloud-init: the user's user-data (checked by domain/cloud_init.py) and cloud-config
    # pieces merged into it, for a VM's NoCloud seed; given at create only
    user_data: str | None = None
    cloud_config: dict[str, Any] = field(default_factory=dict)
    # PID 1's working dir, user and stdio (the Docker API sets them), given at create only
    cwd: str = "/"
    user: tuple[int, int] = (0, 0)       # uid, gid inside
    terminal: bool = False               # PID 1 on a pty (its output logged as stdout)
    stdin: bool = False                  # PID 1's stdin kept open for an attach
    # the image's bootable disk (a vm-disk image): a VM boots it through firmware, with
    # its own bootloader and kernel; None: a root filesystem tree (rootfs)
    boot_disk: Path | None = None


class RunStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"      # prepared (or exited): can be started
    MISSING = "missing"      # the driver knows nothing of it


@dataclass(frozen=True)
class RunState:
    status: RunStatus
    pid: int | None = None           # host pid of PID 1 while running
    exit_code: int | None = None     # set once stopped after running


def require(state: RunState, host_id: str, action: str, *allowed: RunStatus) -> RunState:
    """``state`` if ``action`` may start from it.

    Unknown instances raise NotFoundError; other states not in ``allowed`` InvalidStateError.
    """
    if state.status == RunStatus.MISSING:
        raise NotFoundError("instance", host_id)
    if allowed and state.status not in allowed:
        raise InvalidStateError(host_id, state.status.value, action)
    return state


@dataclass(frozen=True)
class Usage:
    cpu_time_ns: int | None = None
    memory_bytes: int | None = None
    memory_peak_bytes: int | None = None
    pids: int | None = None
    io_read_bytes: int | None = None     # block I/O since start, all devices
    io_write_bytes: int | None = None


@dataclass(frozen=True)
class DiskStats:
    """One drive's I/O since QEMU started, as the guest asked for it."""
    read_bytes: int
    write_bytes: int
    read_ops: int
    write_ops: int


@dataclass(frozen=True)
class GuestStats:
    """A VM measured from the host side: CPU seconds of each vCPU thread, I/O of each drive."""
    vcpu_seconds: dict[int, float]
    disks: dict[str, DiskStats]


@dataclass(frozen=True)
class ExecRequest:
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str = "/"
    tty: bool = False
    rows: int = 24
    cols: int = 80
    user: tuple[int, int] | None = None   # uid, gid inside; None: root


class ExecSession(Protocol):
    """A process started inside an instance; the caller pumps its fds.

    The session owns every fd: callers read and write them but never close them;
    ``close_stdin`` sends end-of-input and ``kill`` releases everything.
    """

    stdin_fd: int | None     # write here; with tty, the pty master
    stdout_fd: int           # read here; with tty, the pty master (stdout and stderr merged)
    stderr_fd: int | None    # None with tty

    def wait(self, timeout: float | None = None) -> int | None:
        """Exit code (128+signal for a signal), or None if still running after timeout."""

    def close_stdin(self) -> None:
        """End of input: close the stdin pipe, or send ^D on a tty; safe to call twice."""

    def resize(self, rows: int, cols: int) -> None: ...

    def kill(self) -> None:
        """Stop the process and release every fd; safe to call twice."""


class InstanceDriver(Protocol):
    """One kind of instance. Methods are synchronous and may take seconds."""

    kind: str
    # options users may set through the API, with their allowed values
    option_choices: dict[str, tuple[str, ...]]

    def create(self, spec: InstanceSpec) -> None:
        """Prepare everything to start; on failure leave nothing behind."""

    def start(self, spec: InstanceSpec) -> RunState:
        """Run PID 1; returns once it is running. On failure leave it stopped."""

    def stop(self, host_id: str, timeout: float, force: bool) -> RunState:
        """SIGTERM, then SIGKILL after ``timeout`` (at once with ``force``)."""

    def pause(self, host_id: str) -> None: ...

    def resume(self, host_id: str) -> None: ...

    def delete(self, host_id: str, instance_dir: Path) -> None:
        """Kill if running and remove every trace; idempotent."""

    def state(self, host_id: str) -> RunState: ...

    def update_limits(self, host_id: str, limits: Limits) -> None:
        """Apply limits to a running instance (a stopped one takes them at next start)."""

    def usage(self, host_id: str) -> Usage: ...

    def exec(self, host_id: str, request: ExecRequest) -> ExecSession: ...

    def read_console(self, host_id: str, offset: int) -> tuple[bytes, int]:
        """PID 1's output from ``offset`` on, and the offset to continue from."""

    def list_host_ids(self) -> list[str]:
        """Every instance this driver has on the host (for reconciliation)."""


@runtime_checkable
class DiskHotplug(Protocol):
    """Drivers that can add a block device to a running instance (VMs)."""

    def attach_disk(self, host_id: str, dev_id: str, path: Path, shared: bool) -> None: ...

    def detach_disk(self, host_id: str, dev_id: str) -> None: ...


@runtime_checkable
class NicHotplug(Protocol):
    """Drivers that plug a NIC (a tap already on its bridge) into a running VM."""

    def attach_nic(self, host_id: str, tap: str, mac: str) -> None: ...

    def detach_nic(self, host_id: str, tap: str) -> None: ...


@runtime_checkable
class InteractiveConsole(Protocol):
    """Drivers whose instances have a console one can type on (a VM's serial port)."""

    def open_console(self, host_id: str) -> socket.socket:
        """A connected stream: read the console's output, write keystrokes to it."""


@runtime_checkable
class Attaches(Protocol):
    """Drivers whose PID 1 may keep its stdin (or a pty) open for a client to attach."""

    def open_stdin(self, host_id: str) -> socket.socket:
        """A connected stream whose writes go to PID 1's stdin (or pty); shut it down
        for writing to close that stdin."""

    def resize(self, host_id: str, rows: int, cols: int) -> None:
        """Resize PID 1's pty (a no-op without one)."""


# one record of PID 1's output: time (RFC 3339), stream (stdout, stderr), partial, payload
LogRecord = tuple[bytes, bytes, bool, bytes]


@runtime_checkable
class Logs(Protocol):
    """Drivers that keep PID 1's output as timed records, stdout apart from stderr."""

    def read_records(self, host_id: str, offset: int) -> tuple[list[LogRecord], int]: ...

    def signal(self, host_id: str, sig: str) -> None:
        """Send ``sig`` to PID 1."""


@runtime_checkable
class Launches(Protocol):
    """Drivers that create and start in one go more cheaply than ``create`` + ``start``."""

    def launch(self, spec: InstanceSpec) -> RunState:
        """``create`` then ``start``; on failure the caller deletes, as after ``create``."""


@runtime_checkable
class RootChanges(Protocol):
    """Drivers that tell what an instance changed in its root against its image."""

    def root_changes(self, spec: InstanceSpec) -> list[tuple[str, int]]:
        """(path, kind) in walk order; kind 0 modified, 1 added, 2 deleted (Docker's)."""


@runtime_checkable
class Details(Protocol):
    """Drivers with live facts beyond ``Usage`` for ``cumulo info`` (a VM's footprint)."""

    def details(self, host_id: str) -> dict[str, Any]: ...


@runtime_checkable
class MeasuresGuest(Protocol):
    """Drivers that measure a guest from the host per vCPU and per drive (metrics)."""

    def guest_stats(self, host_id: str) -> GuestStats: ...


@runtime_checkable
class FileTransfer(Protocol):
    """Drivers that may reach an instance's files themselves (a VM's guest agent); when
    they cannot (False, None), or for other drivers, files go through an exec of ``sh``
    and ``cat`` in the instance."""

    def write_file(self, host_id: str, path: str, data: bytes, mode: int) -> bool: ...

    def read_file(self, host_id: str, path: str, limit: int) -> bytes | None: ...


@runtime_checkable
class TpmReader(Protocol):
    """Drivers whose instances may have a vTPM measured by their boot chain (VMs): the
    sha256 PCRs and the firmware's event log, as the guest's kernel reports them."""

    def tpm_measurements(self, host_id: str) -> tuple[dict[int, str], bytes]: ...
