"""Typed reads and writes of tokens (kept as sha256 only) and remotes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from cumulo.errors import ConflictError, NotFoundError, StoreError
from cumulo.store.db import Database
from cumulo.store.tables import RemoteRow, TokenRow


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    token: str
    created_at: datetime | None = None


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class HostStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add_token(self, name: str, token: str) -> None:
        try:
            with self.db.session() as s:
                s.add(TokenRow(name=name, sha256=digest(token)))
        except StoreError as err:
            if isinstance(err.__cause__, IntegrityError):
                raise ConflictError(f"a token named {name!r} exists") from None
            raise

    def token_known(self, token: str) -> bool:
        with self.db.session() as s:
            return s.scalar(select(TokenRow.id).where(TokenRow.sha256 == digest(token))) \
                is not None

    def token_names(self) -> list[str]:
        with self.db.session() as s:
            return list(s.scalars(select(TokenRow.name).order_by(TokenRow.name)))

    def revoke_token(self, name: str) -> None:
        with self.db.session() as s:
            row = s.scalar(select(TokenRow).where(TokenRow.name == name))
            if row is None:
                raise NotFoundError("token", name)
            s.delete(row)

    def add_remote(self, r: Remote) -> None:
        try:
            with self.db.session() as s:
                s.add(RemoteRow(name=r.name, url=r.url, token=r.token))
        except StoreError as err:
            if isinstance(err.__cause__, IntegrityError):
                raise ConflictError(f"remote {r.name!r} already exists") from None
            raise

    def get_remote(self, name: str) -> Remote:
        with self.db.session() as s:
            row = s.scalar(select(RemoteRow).where(RemoteRow.name == name))
            if row is None:
                raise NotFoundError("remote", name)
            return Remote(row.name, row.url, row.token, row.created_at)

    def list_remotes(self) -> list[Remote]:
        with self.db.session() as s:
            return [Remote(r.name, r.url, r.token, r.created_at)
                    for r in s.scalars(select(RemoteRow).order_by(RemoteRow.name))]

    def delete_remote(self, name: str) -> None:
        with self.db.session() as s:
            row = s.scalar(select(RemoteRow).where(RemoteRow.name == name))
            if row is None:
                raise NotFoundError("remote", name)
            s.delete(row)
