"""The optional driver contracts for saving and moving running instances.

``Checkpointable``: the whole state to a file and back (VMs, containers with CRIU).
``Migratable``: live migration over a stream the destination listens on (VMs).
``StateArchive``: moving by state files the service carries between the hosts
(containers: CRIU images plus the root's changes, with pre-dumps for ``--live``).
The services check ``isinstance(driver, ...)`` and tell the user when a kind cannot.
Figures come back as a plain dict: ``total_time_ms``, ``downtime_ms``, ``transferred``
(bytes), ``passes`` and whatever else the driver measures.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cumulo.drivers.base import InstanceSpec, RunState

Progress = Callable[[float, str], None]


@runtime_checkable
class Migratable(Protocol):
    def checkpoint(self, host_id: str, path: Path) -> dict[str, Any]:
        """Save the running (or paused) instance's whole state to ``path`` and stop it."""

    def restore(self, spec: InstanceSpec, path: Path) -> RunState:
        """Run a stopped instance again from a checkpoint, where it was."""

    def signature(self, host_id: str) -> str:
        """What must be equal on both ends for the state to load (machine, boot files)."""

    def prepare_incoming(self, spec: InstanceSpec, address: str) -> str:
        """Start a created instance waiting for state on ``address``; returns the URI."""

    def finish_incoming(self, host_id: str, resume: bool) -> RunState:
        """Wait until the incoming state is complete; ``resume`` runs a paused guest."""

    def send(self, host_id: str, uri: str, *, live: bool, bandwidth: int | None,
             progress: Progress, cancelled: Callable[[], bool]) -> dict[str, Any]:
        """Send the state to a ``prepare_incoming`` URI; the source is left paused."""

    def resume_after_failed_send(self, host_id: str, was_running: bool) -> None:
        """Put the source back as it was after a failed or cancelled ``send``."""

    def end_outgoing(self, host_id: str) -> str:
        """End a ``send`` nobody watches (cancel unless past no return) and say how it
        ended: "completed", "failed", "cancelled", "none" (never began) or "gone"."""


@runtime_checkable
class MachineVariants(Protocol):
    def match_source(self, host_id: str, theirs: str) -> None:
        """On the destination, before the signatures are compared: take the source's
        variant (``theirs``) of a detail this host runs either way, so that an instance
        started before that detail changed can still move here."""


@runtime_checkable
class Checkpointable(Protocol):
    def checkpoint(self, host_id: str, path: Path) -> dict[str, Any]:
        """Save the running (or paused) instance's whole state to ``path`` and stop it."""

    def restore(self, spec: InstanceSpec, path: Path) -> RunState:
        """Run a stopped instance again from a checkpoint, where it was."""


@runtime_checkable
class StateArchive(Protocol):
    def signature(self, host_id: str) -> str:
        """What must be equal on both ends for the state to load."""

    def pre_dump(self, host_id: str, images: Path, archive: Path) -> dict[str, Any]:
        """Save the memory of the running instance to ``images`` (the parent of the final
        dump) and ``archive`` (to send); it keeps running."""

    def export_state(self, host_id: str, path: Path, parent: Path | None = None
                     ) -> dict[str, Any]:
        """The whole state and the root's changes to ``path``; the instance stops.
        ``parent``: a ``pre_dump`` dir, so only what changed since is saved."""

    def restore(self, spec: InstanceSpec, path: Path, parent: Path | None = None) -> RunState:
        """Run the stopped instance from ``path`` (``parent``: the pre-dump's archive)."""

    def export_root(self, host_id: str, path: Path) -> dict[str, Any]:
        """The stopped instance's root changes to ``path`` (cold migration)."""

    def import_root(self, spec: InstanceSpec, path: Path) -> None:
        """Replace the stopped instance's root changes with those in ``path``."""


@runtime_checkable
class Postcopy(Protocol):
    """Drivers whose live migration can switch to post-copy (VMs: QEMU's postcopy-ram)."""

    def allow_postcopy(self, host_id: str) -> None:
        """Let the next migration of this instance switch to post-copy: called on the
        destination before ``prepare_incoming`` and on the source before ``send``."""
