"""Typed reads and writes of remotes: the other hosts this one trusts (tokens they gave
us, the sha256 of their certificates). Our own tokens are identities (identities.py)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cumulo.errors import ConflictError, NotFoundError, StoreError
from cumulo.store.db import Database
from cumulo.store.tables import RemoteRow


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    token: str
    fingerprint: str = ""    # sha256 of its certificate, pinned ("": plain HTTP)
    created_at: datetime | None = None


class HostStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add_remote(self, r: Remote) -> None:
        try:
            with self.db.session() as s:
                s.add(RemoteRow(name=r.name, url=r.url, token=r.token,
                                fingerprint=r.fingerprint))
        except StoreError as err:
            if isinstance(err.__cause__, IntegrityError):
                raise ConflictError(f"remote {r.name!r} already exists") from None
            raise

    def get_remote(self, name: str) -> Remote:
        with self.db.session() as s:
            row = s.scalar(select(RemoteRow).where(RemoteRow.name == name))
            if row is None:
                raise NotFoundError("remote", name)
            return Remote(row.name, row.url, row.token, row.fingerprint, row.created_at)

    def list_remotes(self) -> list[Remote]:
        with self.db.session() as s:
            return [Remote(r.name, r.url, r.token, r.fingerprint, r.created_at)
                    for r in s.scalars(select(RemoteRow).order_by(RemoteRow.name))]

    def delete_remote(self, name: str) -> None:
        with self.db.session() as s:
            row = s.scalar(select(RemoteRow).where(RemoteRow.name == name))
            if row is None:
                raise NotFoundError("remote", name)
            s.delete(row)
