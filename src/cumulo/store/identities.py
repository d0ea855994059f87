"""Typed reads and writes of identities (bearer tokens kept as sha256 only), their roles
per project, and the audit log of mutating requests."""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cumulo.errors import ConflictError, NotFoundError, StoreError
from cumulo.store.db import Database
from cumulo.store.tables import AUDIT, AuditRow, IdentityRoleRow, IdentityRow, utcnow

CLIENT, REMOTE = "client", "remote"   # kinds: an API user; another host (migration only)
MEMBER = "member"   # a cluster member: migrates, and forwards requests for their callers
FLUSH_WAIT = 10.0   # seconds to wait for queued audit records to be written

log = logging.getLogger(__name__)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    id: int
    name: str
    kind: str
    admin: bool = False
    roles: dict[str, str] = field(default_factory=dict)   # project -> role
    created_at: datetime | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    identity: str
    project: str | None
    action: str
    object: str
    result: int


def _identity(row: IdentityRow, roles: dict[str, str]) -> Identity:
    return Identity(row.id, row.name, row.kind, row.admin, roles, row.created_at,
                    row.expires_at, row.last_used_at)


class IdentityStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def add(self, name: str, kind: str, token: str, *, admin: bool = False,
            roles: dict[str, str] | None = None, expires_at: datetime | None = None
            ) -> Identity:
        try:
            with self.db.session() as s:
                row = IdentityRow(name=name, kind=kind, admin=admin, sha256=digest(token),
                                  expires_at=expires_at, created_at=utcnow())
                s.add(row)
                s.flush()
                for project, role in (roles or {}).items():
                    s.add(IdentityRoleRow(identity_id=row.id, project=project, role=role))
                return _identity(row, dict(roles or {}))
        except StoreError as err:
            if isinstance(err.__cause__, IntegrityError):
                raise ConflictError(f"an identity named {name!r} exists") from None
            raise

    def by_token(self, token: str) -> Identity | None:
        """The identity holding ``token`` (expired ones too: the caller says why not)."""
        with self.db.session() as s:
            row = s.scalar(select(IdentityRow).where(IdentityRow.sha256 == digest(token)))
            if row is None:
                return None
            return _identity(row, self._roles(s, row.id))

    @staticmethod
    def _roles(s: Session, identity_id: int) -> dict[str, str]:
        return {r.project: r.role for r in s.scalars(
            select(IdentityRoleRow).where(IdentityRoleRow.identity_id == identity_id))}

    def by_id(self, identity_id: int) -> Identity | None:
        with self.db.session() as s:
            row = s.get(IdentityRow, identity_id)
            return None if row is None else _identity(row, self._roles(s, row.id))

    def get(self, name: str) -> Identity:
        with self.db.session() as s:
            row = s.scalar(select(IdentityRow).where(IdentityRow.name == name))
            if row is None:
                raise NotFoundError("identity", name)
            return _identity(row, self._roles(s, row.id))

    def list(self, kind: str | None = None) -> list[Identity]:
        with self.db.session() as s:
            q = select(IdentityRow).order_by(IdentityRow.name)
            if kind is not None:
                q = q.where(IdentityRow.kind == kind)
            rows = list(s.scalars(q))
            roles: dict[int, dict[str, str]] = {}
            for r in s.scalars(select(IdentityRoleRow)):
                roles.setdefault(r.identity_id, {})[r.project] = r.role
            return [_identity(row, roles.get(row.id, {})) for row in rows]

    def revoke(self, name: str, kind: str | None = None) -> Identity:
        """Delete it (and its roles); its token is unknown from the next request on."""
        with self.db.session() as s:
            q = select(IdentityRow).where(IdentityRow.name == name)
            if kind is not None:
                q = q.where(IdentityRow.kind == kind)
            row = s.scalar(q)
            if row is None:
                raise NotFoundError("token" if kind == REMOTE else "identity", name)
            ident = _identity(row, self._roles(s, row.id))
            s.execute(delete(IdentityRoleRow).where(IdentityRoleRow.identity_id == row.id))
            s.delete(row)
            return ident

    def grant(self, name: str, project: str, role: str | None) -> Identity:
        """Give ``name`` ``role`` in ``project`` (None: take its role there away)."""
        with self.db.session() as s:
            row = s.scalar(select(IdentityRow).where(IdentityRow.name == name))
            if row is None:
                raise NotFoundError("identity", name)
            s.execute(delete(IdentityRoleRow).where(IdentityRoleRow.identity_id == row.id,
                                                    IdentityRoleRow.project == project))
            if role is not None:
                s.add(IdentityRoleRow(identity_id=row.id, project=project, role=role))
            s.flush()
            return _identity(row, self._roles(s, row.id))

    def touch(self, identity_id: int, when: datetime) -> None:
        with self.db.session() as s:
            s.execute(update(IdentityRow).where(IdentityRow.id == identity_id)
                      .values(last_used_at=when))


class AuditStore:
    """The audit log. ``record_later`` queues an entry for a writer thread, which writes
    whatever has queued up in one commit: an answered request neither waits for its
    record nor hands a worker thread a commit of its own. ``list`` and ``close`` wait
    for what is queued to be written first."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._cond = threading.Condition()
        self._pending: list[dict[str, Any]] = []
        self._writing = False
        self._closed = False
        self._writer: threading.Thread | None = None

    @staticmethod
    def _entry(identity: str, project: str | None, action: str, obj: str,
               result: int) -> dict[str, Any]:
        return {"at": utcnow(), "identity": identity, "project": project, "action": action,
                "object": obj[:255], "result": result}

    def _write(self, entries: list[dict[str, Any]]) -> None:
        with self.db.session() as s:   # (on the table: the ORM's bulk insert costs ~0.15 ms more)
            s.execute(insert(AUDIT), entries)

    def record(self, identity: str, project: str | None, action: str, obj: str,
               result: int) -> None:
        """Written before it returns."""
        self._write([self._entry(identity, project, action, obj, result)])

    def record_later(self, identity: str, project: str | None, action: str, obj: str,
                     result: int) -> None:
        """Queued for the writer thread (a store error goes to the log)."""
        entry = self._entry(identity, project, action, obj, result)
        with self._cond:
            if not self._closed:
                self._pending.append(entry)
                if self._writer is None:
                    self._writer = threading.Thread(target=self._loop, name="audit",
                                                    daemon=True)
                    self._writer.start()
                self._cond.notify_all()
                return
        self._write_logged([entry])   # closing: no writer any more

    def _write_logged(self, entries: list[dict[str, Any]]) -> None:
        try:
            self._write(entries)
        except StoreError as err:
            log.error("%d audit record(s) not written: %s", len(entries), err)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return
                batch, self._pending, self._writing = self._pending, [], True
            try:
                self._write_logged(batch)
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()

    def flush(self, timeout: float = FLUSH_WAIT) -> None:
        """Wait (bounded) until what was queued is written."""
        with self._cond:
            self._cond.wait_for(lambda: not self._pending and not self._writing, timeout)

    def close(self) -> None:
        """Write what is queued; the writer ends (later records are written at once)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            writer = self._writer
        if writer is not None:
            writer.join(FLUSH_WAIT)

    def list(self, project: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """The newest ``limit`` entries (of ``project``), oldest first (those queued
        written first)."""
        self.flush()
        with self.db.session() as s:
            q = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
            if project is not None:
                q = q.where(AuditRow.project == project)
            rows = list(s.scalars(q))
        return [AuditEntry(r.at, r.identity, r.project, r.action, r.object, r.result)
                for r in reversed(rows)]
