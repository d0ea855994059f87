"""Typed reads and writes of the cluster: members, their heartbeats, join tokens, and
where instances run. Members are rows of the scheduler's table (store/members.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update

from cumulo.cluster.model import EVACUATED, OFFLINE, ONLINE, Resources
from cumulo.errors import ConflictError, InvalidInputError, NotFoundError, StoreError
from cumulo.store.db import Database
from cumulo.store.identities import digest
from cumulo.store.members import MemberRecord, MemberStore
from cumulo.store.tables import (
    AllocationRow,
    ClusterConfigRow,
    InstanceRow,
    JoinTokenRow,
    MemberRow,
    OperationRow,
    ProjectRow,
    utcnow,
)

__all__ = ["EVACUATED", "OFFLINE", "ONLINE"]


@dataclass(frozen=True)
class Member:
    name: str
    address: str                      # HOST:PORT of its --listen
    state: str                        # online, evacuated (as written; see ``effective``)
    cpus: int
    memory: int                       # bytes
    disk: int                         # bytes
    groups: list[str] = field(default_factory=list)
    features: dict[str, Any] = field(default_factory=dict)
    heartbeat: datetime | None = None
    silent: float = 0.0               # seconds since its last heartbeat, by the DB's clock
    fingerprint: str = ""             # sha256 of its certificate, pinned by the others

    def effective(self, offline_after: float) -> str:
        """online, offline (silent too long) or evacuated."""
        if self.state == EVACUATED:
            return EVACUATED
        return OFFLINE if self.silent > offline_after else ONLINE


@dataclass(frozen=True)
class Usage:
    """What is declared on a member: instances and the memory and CPUs of their limits."""
    instances: int = 0
    memory: int = 0
    cpus: float = 0.0


def _member(r: MemberRecord, now: datetime) -> Member:
    silent = 0.0 if r.heartbeat is None else max(0.0, (now - r.heartbeat).total_seconds())
    return Member(r.name, r.address, r.state, int(r.capacity.cpus), r.capacity.memory,
                  r.capacity.disk, sorted(r.groups), dict(r.features), r.heartbeat, silent,
                  r.fingerprint)


class ClusterStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.members = MemberStore(db)

    def _now(self, s: Any) -> datetime:
        """The database's clock: every member compares heartbeats with the same one."""
        if self.db.engine.dialect.name == "postgresql":
            now: datetime = s.scalar(select(func.now()))
            return now
        return utcnow()

    # members: the scheduler's table (store/members.py), read with their silence
    def add_member(self, m: Member) -> None:
        self.members.add(MemberRecord(
            name=m.name, capacity=Resources(m.cpus, m.memory, m.disk), address=m.address,
            state=m.state, groups=frozenset(m.groups), features=dict(m.features),
            fingerprint=m.fingerprint))

    def _db_now(self) -> datetime:
        with self.db.session() as s:
            return self._now(s)

    def list_members(self) -> list[Member]:
        now = self._db_now()
        return [_member(r, now) for r in self.members.members()]

    def get_member(self, name: str) -> Member:
        now = self._db_now()
        return _member(self.members.get(name), now)

    def heartbeat(self, name: str, address: str, features: dict[str, Any]) -> None:
        self.members.update(name, address=address, features=features)
        self.members.heartbeat(name)

    def set_state(self, name: str, state: str) -> None:
        self.members.update(name, state=state)

    def usage(self) -> dict[str, Usage]:
        """Declared usage per member (instances without a location are not counted)."""
        out: dict[str, list[Any]] = {}
        with self.db.session() as s:
            for loc, limits in s.execute(select(InstanceRow.location, InstanceRow.limits)
                                         .where(InstanceRow.location.is_not(None))):
                u = out.setdefault(loc, [0, 0, 0.0])
                u[0] += 1
                u[1] += int((limits or {}).get("memory") or 0)
                u[2] += float((limits or {}).get("cpu") or 0)
        return {k: Usage(*v) for k, v in out.items()}

    # instances
    def location(self, project: str, name: str) -> str | None:
        """The member an instance runs on; None if there is no such instance or no cluster."""
        with self.db.session() as s:
            return s.scalar(select(InstanceRow.location)
                            .join(ProjectRow, InstanceRow.project_id == ProjectRow.id)
                            .where(ProjectRow.name == project, InstanceRow.name == name))

    def instances_on(self, member: str, origin: bool = False) -> list[tuple[str, str, str]]:
        """(project, name, location) of the instances on ``member`` (``origin``: those
        evacuated from it)."""
        col = InstanceRow.origin if origin else InstanceRow.location
        with self.db.session() as s:
            q = (select(ProjectRow.name, InstanceRow.name, InstanceRow.location)
                 .join(ProjectRow, InstanceRow.project_id == ProjectRow.id)
                 .where(col == member).order_by(InstanceRow.name))
            return [(p, n, loc or "") for p, n, loc in s.execute(q)]

    def ephemeral_on(self, member: str) -> list[tuple[str, str]]:
        """(project, name) of the ephemeral instances on ``member``."""
        with self.db.session() as s:
            q = (select(ProjectRow.name, InstanceRow.name)
                 .join(ProjectRow, InstanceRow.project_id == ProjectRow.id)
                 .where(InstanceRow.location == member, InstanceRow.ephemeral.is_(True)))
            return [(p, n) for p, n in s.execute(q)]

    def claim(self, project: str, name: str, old: str, new: str) -> bool:
        """Move an instance's location from ``old`` to ``new`` if it is still on ``old``
        (one member wins when several try)."""
        with self.db.session() as s:
            pid = select(ProjectRow.id).where(ProjectRow.name == project).scalar_subquery()
            res = s.execute(update(InstanceRow).where(
                InstanceRow.project_id == pid, InstanceRow.name == name,
                InstanceRow.location == old).values(location=new))
            return bool(getattr(res, "rowcount", 0) == 1)

    def operation_member(self, op_id: str) -> str | None:
        """The member running an unfinished operation (None: finished, unknown, or made
        outside a cluster): its daemon is the one that knows how it goes."""
        with self.db.session() as s:
            row = s.get(OperationRow, op_id)
            if row is None or row.status not in ("pending", "running"):
                return None
            member = (row.resources or {}).get("member")
            return member if isinstance(member, str) else None

    def claim_unplaced(self, member: str) -> int:
        """Instances made before the cluster existed run on its first member."""
        with self.db.session() as s:
            rows = list(s.scalars(select(InstanceRow).where(InstanceRow.location.is_(None))))
            for row in rows:
                row.location = member
            return len(rows)

    # join tokens
    def add_join_token(self, name: str, token: str, ttl: float) -> datetime:
        with self.db.session() as s:
            if s.scalar(select(MemberRow.id).where(MemberRow.name == name)) is not None:
                raise ConflictError(f"member {name!r} already exists")
            expires = self._now(s) + timedelta(seconds=ttl)
            s.add(JoinTokenRow(name=name, sha256=digest(token), expires_at=expires))
            return expires

    def use_join_token(self, name: str, token: str) -> None:
        """Take the token (once): unknown, used, expired or for another name is refused."""
        with self.db.session(modify=True) as s:
            row = s.scalar(select(JoinTokenRow).where(JoinTokenRow.sha256 == digest(token))
                           .with_for_update())
            if row is None or row.name != name:
                raise InvalidInputError("this join token is not known to the cluster")
            if row.used_at is not None:
                raise InvalidInputError(f"this join token was already used (by member"
                                        f" {row.name!r}): ask for a new one with"
                                        f" `cumulo cluster add {row.name}`")
            now = self._now(s)
            if row.expires_at <= now:
                raise InvalidInputError(f"this join token expired at"
                                        f" {row.expires_at:%Y-%m-%d %H:%M:%S} UTC: ask for a"
                                        f" new one with `cumulo cluster add {row.name}`")
            row.used_at = now

    def forget_member(self, name: str) -> list[tuple[str, str]]:
        """Remove member ``name`` from the store in one transaction, with the allocations
        on it; instances evacuated from it forget where they came from; (project, name)
        of the instances still located there (the caller deletes those rows)."""
        with self.db.session(modify=True) as s:
            member = s.scalar(select(MemberRow).where(MemberRow.name == name)
                              .with_for_update())
            if member is None:
                raise NotFoundError("member", name)
            rows = list(s.execute(
                select(InstanceRow, ProjectRow.name)
                .join(ProjectRow, InstanceRow.project_id == ProjectRow.id)
                .where(InstanceRow.location == name)))
            s.execute(delete(AllocationRow).where(AllocationRow.member_id == member.id))
            s.execute(delete(JoinTokenRow).where(JoinTokenRow.name == name))
            s.execute(update(InstanceRow).where(InstanceRow.origin == name)
                      .values(origin=None))
            s.delete(member)
            return [(project, row.name) for row, project in rows]

    # cluster-wide settings (cluster/settings.py checks them)
    def config(self) -> dict[str, str]:
        with self.db.session() as s:
            return {r.key: r.value for r in s.scalars(select(ClusterConfigRow))
                    if not r.key.endswith(".last")}

    def set_config(self, key: str, value: str | None) -> None:
        """Set ``key`` (None: back to its default)."""
        with self.db.session(modify=True) as s:
            row = s.get(ClusterConfigRow, key, with_for_update=True)
            if value is None:
                if row is not None:
                    s.delete(row)
            elif row is None:
                s.add(ClusterConfigRow(key=key, value=value))
            else:
                row.value = value

    def take_round(self, key: str, cooldown: float) -> bool:
        """Whether this member may run a round of ``key`` now: none ran for ``cooldown``
        seconds (by the database's clock); if so the round is marked as begun. One member
        wins when several try (a row lock, or the key's uniqueness)."""
        try:
            with self.db.session(modify=True) as s:
                now = self._now(s).timestamp()
                row = s.get(ClusterConfigRow, f"{key}.last", with_for_update=True)
                if row is not None and now - float(row.value) < cooldown:
                    return False
                if row is None:
                    s.add(ClusterConfigRow(key=f"{key}.last", value=repr(now)))
                else:
                    row.value = repr(now)
                return True
        except StoreError:   # another member inserted it first
            return False
