"""Typed reads and writes of measured-boot baselines: one per VM, gone with its instance
(the row cascades on the instance's delete)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cumulo.errors import NotFoundError
from cumulo.store.db import Database
from cumulo.store.tables import InstanceRow, ProjectRow, TpmBaselineRow


@dataclass(frozen=True)
class Baseline:
    pcrs: dict[int, str]                    # PCR index -> sha256 hex
    events: list[dict[str, Any]] = field(default_factory=list)   # eventlog.Event fields
    created_at: datetime | None = None


class TpmBaselineStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    @staticmethod
    def _instance_id(s: Session, project: str, name: str) -> int:
        found = s.scalar(select(InstanceRow.id).join(
            ProjectRow, InstanceRow.project_id == ProjectRow.id).where(
            ProjectRow.name == project, InstanceRow.name == name))
        if found is None:
            raise NotFoundError("instance", name)
        return int(found)

    def put(self, project: str, name: str, baseline: Baseline) -> Baseline:
        """Record (or replace) the instance's baseline; returns it with its time."""
        with self.db.session() as s:
            iid = self._instance_id(s, project, name)
            row = s.get(TpmBaselineRow, iid)
            if row is not None:
                s.delete(row)
                s.flush()
            row = TpmBaselineRow(instance_id=iid,
                                 pcrs={str(k): v for k, v in baseline.pcrs.items()},
                                 events=list(baseline.events))
            s.add(row)
            s.flush()
            return self._baseline(row)

    def get(self, project: str, name: str) -> Baseline | None:
        with self.db.session() as s:
            row = s.get(TpmBaselineRow, self._instance_id(s, project, name))
            return None if row is None else self._baseline(row)

    @staticmethod
    def _baseline(row: TpmBaselineRow) -> Baseline:
        return Baseline({int(k): v for k, v in row.pcrs.items()}, list(row.events),
                        row.created_at)
