"""The optional driver contract for stateful snapshots: memory saved with the disk.

A driver that can pause an instance, write its memory and device state to a file and
copy its disk at that same instant offers ``save_state``; the snapshot is brought back
with ``Migratable.restore`` (the same state format as a checkpoint). VMs do; containers
checkpoint with CRIU instead (``Checkpointable``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class LiveSnapshot(Protocol):
    def save_state(self, host_id: str, path: Path, then: Callable[[], None]) -> dict[str, Any]:
        """Pause, write the state to ``path``, run ``then`` (copy the disks) while still
        paused, and let the instance run on as it was; returns the save's figures."""
