"""Typed reads and writes of volumes and their attachments to instances."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cumulo.domain.projects import Need
from cumulo.domain.volumes import Attachment, Volume
from cumulo.errors import ConflictError, NotFoundError, StoreError
from cumulo.store.db import Database
from cumulo.store.projects import admit, named_row, project_id
from cumulo.store.tables import InstanceRow, VolumeAttachmentRow, VolumeRow


class VolumeStore:
    """Volumes in the daemon's database; each method is one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _row(self, s: Session, project: str, name: str) -> VolumeRow:
        return named_row(s, VolumeRow, project, name, "volume")

    @staticmethod
    def _volume(s: Session, project: str, row: VolumeRow) -> Volume:
        q = (select(VolumeAttachmentRow, InstanceRow.name)
             .join(InstanceRow, VolumeAttachmentRow.instance_id == InstanceRow.id)
             .where(VolumeAttachmentRow.volume_id == row.id).order_by(InstanceRow.name))
        atts = [Attachment(instance=n, path=a.path, shared=a.shared) for a, n in s.execute(q)]
        return Volume(project=project, name=row.name, pool=row.pool, size=row.size,
                      created_at=row.created_at, attachments=atts)

    def add(self, vol: Volume) -> Volume:
        try:
            with self.db.session(modify=True) as s:   # limits.disk: under the project's lock
                row = VolumeRow(project_id=admit(s, vol.project, Need(disk=vol.size)).id,
                                name=vol.name,
                                pool=vol.pool, size=vol.size)
                s.add(row)
                s.flush()
                return self._volume(s, vol.project, row)
        except StoreError as err:
            if isinstance(err.__cause__, IntegrityError):
                raise ConflictError(f"volume {vol.name!r} already exists") from err
            raise

    def get(self, project: str, name: str) -> Volume:
        with self.db.session() as s:
            return self._volume(s, project, self._row(s, project, name))

    def list_in(self, project: str) -> list[Volume]:
        with self.db.session() as s:
            rows = s.scalars(select(VolumeRow).where(
                VolumeRow.project_id == project_id(s, project)).order_by(VolumeRow.name))
            return [self._volume(s, project, r) for r in rows]

    def set_size(self, project: str, name: str, size: int) -> Volume:
        with self.db.session(modify=True) as s:
            row = self._row(s, project, name)
            admit(s, project, Need(disk=size - row.size))
            row.size = size
            s.flush()
            return self._volume(s, project, row)

    def delete(self, project: str, name: str) -> None:
        with self.db.session() as s:
            s.delete(self._row(s, project, name))

    def attach(self, project: str, name: str, instance: str, path: str, shared: bool
               ) -> Volume:
        with self.db.session() as s:
            row = self._row(s, project, name)
            inst = s.scalar(select(InstanceRow).where(
                InstanceRow.project_id == row.project_id, InstanceRow.name == instance))
            if inst is None:
                raise NotFoundError("instance", instance)
            s.add(VolumeAttachmentRow(volume_id=row.id, instance_id=inst.id, path=path,
                                      shared=shared))
            s.flush()
            return self._volume(s, project, row)

    def detach(self, project: str, name: str, instance: str) -> Volume:
        with self.db.session() as s:
            row = self._row(s, project, name)
            att = s.scalar(select(VolumeAttachmentRow)
                           .join(InstanceRow, VolumeAttachmentRow.instance_id == InstanceRow.id)
                           .where(VolumeAttachmentRow.volume_id == row.id,
                                  InstanceRow.name == instance))
            if att is None:
                raise NotFoundError("attachment", f"{name} to {instance}")
            s.delete(att)
            s.flush()
            return self._volume(s, project, row)

    def of_instance(self, project: str, instance: str) -> list[Volume]:
        """The volumes attached to an instance."""
        with self.db.session() as s:
            q = (select(VolumeRow).join(VolumeAttachmentRow,
                                        VolumeAttachmentRow.volume_id == VolumeRow.id)
                 .join(InstanceRow, VolumeAttachmentRow.instance_id == InstanceRow.id)
                 .where(InstanceRow.project_id == project_id(s, project),
                        InstanceRow.name == instance).order_by(VolumeRow.name))
            return [self._volume(s, project, r) for r in s.scalars(q)]
