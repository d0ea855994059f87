"""Volumes: size-capped filesystems in a storage pool that instances mount."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class Attachment:
    instance: str            # instance name, same project as the volume
    path: str                # mount point inside a container ("" for a VM: a block device)
    shared: bool = False     # the user allowed several running instances at once


@dataclass
class Volume:
    project: str
    name: str
    pool: str
    size: int                # bytes
    created_at: datetime | None = None
    attachments: list[Attachment] = field(default_factory=list)

    @property
    def key(self) -> str:
        """Unique in its pool: names are [a-z0-9-], so '_' cannot be ambiguous."""
        return f"{self.project}_{self.name}"


def device_id(vol: Volume) -> str:
    """The QEMU block node and device id (and disk serial) of a volume in a VM."""
    return f"vol-{vol.name}"
