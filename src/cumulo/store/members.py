"""Cluster members, placement groups and allocations: the scheduler's tables.

``members`` (one row per cumulod; membership writes it, the scheduler reads it):

===============  ==========================================================
name             unique member name (``cumulo cluster add NAME``)
address          where the members reach it (``HOST:PORT``)
state            as written: ``online`` | ``evacuated`` (``offline`` is derived:
                 silent for longer than ``offline_after`` seconds)
cpus/memory/disk capacity offered to instances (bytes for memory and disk)
groups           member groups (``--target @GROUP``), a JSON list
features         a JSON object from its host probe: ``{"kvm": true, "criu": true,
                 "arch": "x86_64", "runtimes": ["runc"], "instance_types":
                 ["container", "vm"]}`` (see ``feature_names``)
heartbeat        the last time it said it was alive (UTC)
used_*/instances declared on it: only ``allocate``/``release``/``move`` change these
===============  ==========================================================

These are the columns h-cluster's membership (store/cluster.py) writes, plus the
scheduler's ``used_*`` and ``instances``.

An allocation is one transaction per candidate member: lock the member's row
(``SELECT ... FOR UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` takes the
database's write lock), lock the placement group's row if any, re-check state, free
capacity and the group's strict rule, insert the allocation and add its resources
to the row, commit. A candidate that no longer fits (another launch took it) is a
lost race: the next candidate is tried. So concurrent launches never overcommit.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cumulo.cluster.model import (
    OFFLINE,
    ONLINE,
    POLICIES,
    SPREAD,
    STATES,
    Member,
    PlacementGroup,
    Request,
    Resources,
)
from cumulo.domain.units import format_size, validate_name
from cumulo.errors import ConflictError, InvalidInputError, NotFoundError, StoreError
from cumulo.store.db import Database
from cumulo.store.projects import project_id
from cumulo.store.tables import (
    AllocationRow,
    MemberRow,
    PlacementGroupRow,
    ProjectRow,
    utcnow,
)


@dataclass(frozen=True)
class MemberRecord:
    """A ``members`` row. ``used`` and ``instances`` are read-only here."""

    name: str
    capacity: Resources
    address: str = ""
    state: str = ONLINE
    groups: frozenset[str] = frozenset()
    features: dict[str, Any] = field(default_factory=dict)
    heartbeat: datetime | None = None   # None: now, when added
    used: Resources = Resources()
    instances: int = 0
    fingerprint: str = ""   # sha256 of its certificate (members pin it; membership sets it)


@dataclass(frozen=True)
class Allocation:
    project: str
    instance: str
    member: str
    resources: Resources
    placement_group: str | None = None


class LostRace(ConflictError):
    """Every candidate was taken (or changed) before the allocation could lock it;
    ``why`` says what each candidate had become."""

    def __init__(self, why: dict[str, str]) -> None:
        self.why = dict(why)
        super().__init__("no candidate member could take it any more: " + ", ".join(
            f"{m} {w}" for m, w in why.items()))


def feature_names(features: dict[str, Any]) -> frozenset[str]:
    """The probe's features as the names a request can need: a true flag by its key
    (``kvm``), list items by themselves (``runc``) and, for instance types, as
    ``type:vm``; ``arch`` is the architecture, not a feature."""
    out: set[str] = set()
    for key, value in features.items():
        if isinstance(value, list):
            out.update(f"type:{v}" if key == "instance_types" else str(v) for v in value)
        elif value is True:
            out.add(key)
    return frozenset(out)


def _record(r: MemberRow) -> MemberRecord:
    return MemberRecord(
        name=r.name, capacity=Resources(r.cpus, r.memory, r.disk), address=r.address,
        state=r.state, groups=frozenset(r.groups), features=dict(r.features),
        heartbeat=r.heartbeat, used=Resources(r.used_cpus, r.used_memory, r.used_disk),
        instances=r.instances, fingerprint=r.fingerprint)


def _check_state(state: str) -> None:
    if state not in STATES:
        raise InvalidInputError(f"unknown member state {state!r}: one of {', '.join(STATES)}")


def _integrity(err: StoreError) -> bool:
    return isinstance(err.__cause__, IntegrityError)


class MemberStore:
    """``offline_after``: seconds of silence after which an online member counts as
    offline (None: never, heartbeats not kept)."""

    def __init__(self, db: Database, offline_after: float | None = None) -> None:
        self.db, self.offline_after = db, offline_after

    def _now(self, s: Session) -> datetime:
        """The database's clock on PostgreSQL: every member compares with the same one."""
        if self.db.engine.dialect.name == "postgresql":
            now = s.scalar(select(func.now()))
            if isinstance(now, datetime):
                return now
        return utcnow()

    def _state(self, row: MemberRow, s: Session, now: datetime | None = None) -> str:
        """online, offline (silent too long) or evacuated."""
        if row.state == ONLINE and self.offline_after is not None and \
                ((now or self._now(s)) - row.heartbeat).total_seconds() > self.offline_after:
            return OFFLINE
        return row.state

    # --- members (membership writes these) ---
    def add(self, m: MemberRecord) -> None:
        try:
            self.add_many([m])
        except ConflictError:
            raise ConflictError(f"member {m.name!r} already exists") from None

    def add_many(self, records: list[MemberRecord]) -> None:
        """Several members in one transaction (a benchmark's or a test's inventory)."""
        for m in records:
            validate_name(m.name, "member")
            _check_state(m.state)
        try:
            with self.db.session() as s:
                now = self._now(s)
                s.add_all([MemberRow(
                    name=m.name, address=m.address, state=m.state,
                    cpus=int(m.capacity.cpus), memory=m.capacity.memory,
                    disk=m.capacity.disk, groups=sorted(m.groups),
                    features=dict(m.features), heartbeat=m.heartbeat or now,
                    fingerprint=m.fingerprint)
                    for m in records])
        except StoreError as err:
            if _integrity(err):
                raise ConflictError("some of these members already exist") from None
            raise

    def update(self, name: str, *, address: str | None = None, state: str | None = None,
               capacity: Resources | None = None, groups: frozenset[str] | None = None,
               features: dict[str, Any] | None = None) -> MemberRecord:
        """Change what is given; the declared usage is left alone."""
        if state is not None:
            _check_state(state)
        with self.db.session(modify=True) as s:
            row = self._row(s, name, lock=True)
            if address is not None:
                row.address = address
            if state is not None:
                row.state = state
            if capacity is not None:
                row.cpus, row.memory = int(capacity.cpus), capacity.memory
                row.disk = capacity.disk
            if groups is not None:
                row.groups = sorted(groups)
            if features is not None:
                row.features = dict(features)
            s.flush()
            return _record(row)

    def heartbeat(self, name: str, at: datetime | None = None) -> None:
        with self.db.session() as s:
            self._row(s, name).heartbeat = at or self._now(s)

    def silent_since(self, cutoff: datetime) -> list[str]:
        """Online members whose last heartbeat is older than ``cutoff``."""
        with self.db.session() as s:
            q = select(MemberRow.name).where(MemberRow.state == ONLINE).where(
                MemberRow.heartbeat < cutoff)
            return sorted(s.scalars(q))

    def get(self, name: str) -> MemberRecord:
        with self.db.session() as s:
            return _record(self._row(s, name))

    def members(self) -> list[MemberRecord]:
        with self.db.session() as s:
            return [_record(r) for r in s.scalars(select(MemberRow).order_by(MemberRow.name))]

    def remove(self, name: str) -> None:
        with self.db.session(modify=True) as s:
            row = self._row(s, name, lock=True)
            n = s.scalar(select(func.count()).select_from(AllocationRow)
                         .where(AllocationRow.member_id == row.id))
            if n:
                raise ConflictError(f"member {name!r} still hosts {n} instance(s): evacuate"
                                    " it first")
            s.delete(row)

    @staticmethod
    def _row(s: Session, name: str, lock: bool = False) -> MemberRow:
        q = select(MemberRow).where(MemberRow.name == name)
        row = s.scalar(q.with_for_update() if lock else q)
        if row is None:
            raise NotFoundError("member", name)
        return row

    def scheduling(self) -> list[Member]:
        """Every member as the placement engine sees it, placement groups counted
        (keyed ``project/group``)."""
        with self.db.session() as s:
            now = self._now(s)
            rows = list(s.scalars(select(MemberRow).order_by(MemberRow.id)))
            pgs: dict[int, dict[str, int]] = defaultdict(dict)
            q = (select(AllocationRow.member_id, ProjectRow.name, PlacementGroupRow.name,
                        func.count())
                 .join(PlacementGroupRow, AllocationRow.placement_group_id ==
                       PlacementGroupRow.id)
                 .join(ProjectRow, PlacementGroupRow.project_id == ProjectRow.id)
                 .group_by(AllocationRow.member_id, ProjectRow.name, PlacementGroupRow.name))
            for member_id, project, group, n in s.execute(q):
                pgs[member_id][f"{project}/{group}"] = n
            return [Member(name=r.name, capacity=Resources(r.cpus, r.memory, r.disk),
                           used=Resources(r.used_cpus, r.used_memory, r.used_disk),
                           instances=r.instances, state=self._state(r, s, now),
                           architecture=str(r.features.get("arch") or "x86_64"),
                           features=feature_names(r.features), groups=frozenset(r.groups),
                           placement_groups=pgs.get(r.id, {})) for r in rows]

    # --- placement groups ---
    def create_group(self, project: str, name: str, policy: str = SPREAD,
                     strict: bool = False) -> PlacementGroup:
        validate_name(name, "placement group")
        if policy not in POLICIES:
            raise InvalidInputError(f"unknown placement policy {policy!r}: use spread or"
                                    " compact")
        try:
            with self.db.session() as s:
                s.add(PlacementGroupRow(project_id=project_id(s, project), name=name,
                                        policy=policy, strict=strict))
        except StoreError as err:
            if _integrity(err):
                raise ConflictError(f"placement group {name!r} already exists") from None
            raise
        return PlacementGroup(name, policy, strict)

    def get_group(self, project: str, name: str) -> PlacementGroup:
        with self.db.session() as s:
            row = self._group(s, project, name)
            return PlacementGroup(row.name, row.policy, row.strict)

    def list_groups(self, project: str) -> list[tuple[PlacementGroup, list[str]]]:
        """Each group with where its instances are (``member/instance``)."""
        with self.db.session() as s:
            pid = project_id(s, project)
            rows = s.scalars(select(PlacementGroupRow).where(
                PlacementGroupRow.project_id == pid).order_by(PlacementGroupRow.name))
            out = []
            for row in rows:
                q = (select(MemberRow.name, AllocationRow.instance)
                     .join(MemberRow, AllocationRow.member_id == MemberRow.id)
                     .where(AllocationRow.placement_group_id == row.id)
                     .order_by(AllocationRow.instance))
                out.append((PlacementGroup(row.name, row.policy, row.strict),
                            [f"{m}/{i}" for m, i in s.execute(q)]))
            return out

    def delete_group(self, project: str, name: str) -> None:
        with self.db.session(modify=True) as s:
            row = self._group(s, project, name, lock=True)
            used = list(s.scalars(select(AllocationRow.instance).where(
                AllocationRow.placement_group_id == row.id).order_by(AllocationRow.instance)))
            if used:
                raise ConflictError(f"placement group {name!r} is used by {', '.join(used)}:"
                                    " delete those instances first")
            s.delete(row)

    def _group(self, s: Session, project: str, name: str,
               lock: bool = False) -> PlacementGroupRow:
        q = select(PlacementGroupRow).where(
            PlacementGroupRow.project_id == project_id(s, project),
            PlacementGroupRow.name == name)
        row = s.scalar(q.with_for_update() if lock else q)
        if row is None:
            raise NotFoundError("placement group", name)
        return row

    # --- allocations ---
    def allocate(self, project: str, instance: str, req: Request,
                 candidates: list[str]) -> str:
        """Record ``instance`` on the first of ``candidates`` that still takes it, each
        tried in its own locked transaction; ``LostRace`` if none does.
        ``req.placement_group`` names a group of ``project`` (``name`` or ``project/name``)."""
        why: dict[str, str] = {}
        for member in candidates:
            try:
                with self.db.session(modify=True) as s:
                    refusal = self._take(s, project, instance, req, member)
                    if refusal is None:
                        return member
                    why[member] = refusal   # nothing was written: the commit is empty
            except StoreError as err:
                if _integrity(err):
                    raise ConflictError(f"instance {instance!r} already has an"
                                        " allocation") from None
                raise
        raise LostRace(why)

    def _take(self, s: Session, project: str, instance: str, req: Request,
              member: str) -> str | None:
        """Allocate on ``member`` in session ``s``, or say why not (nothing written)."""
        pid = project_id(s, project)
        group = None
        if req.placement_group is not None:   # first the group: its rule spans members
            group = self._group(s, project, req.placement_group.name.rsplit("/", 1)[-1],
                                lock=True)
        try:
            row = self._row(s, member, lock=True)
        except NotFoundError:
            return "is no longer a member"
        r = req.resources
        if (refusal := self._refusal(s, row, r, group)) is not None:
            return refusal
        s.add(AllocationRow(project_id=pid, instance=instance, member_id=row.id,
                            placement_group_id=None if group is None else group.id,
                            cpus=r.cpus, memory=r.memory, disk=r.disk))
        row.used_cpus += r.cpus
        row.used_memory += r.memory
        row.used_disk += r.disk
        row.instances += 1
        s.flush()
        return None

    def _refusal(self, s: Session, row: MemberRow, r: Resources,
                 group: PlacementGroupRow | None, moving: int | None = None) -> str | None:
        """Why ``row`` cannot take ``r`` (in ``group``; ``moving``: the id of the
        allocation that would move there, not counted), or None."""
        if (state := self._state(row, s)) != ONLINE:
            return f"is {state}"
        free = Resources(row.cpus - row.used_cpus, row.memory - row.used_memory,
                         row.disk - row.used_disk)
        if not r.fits_in(free):
            return f"has {free.cpus:g} CPU, {format_size(free.memory)} memory," \
                   f" {format_size(free.disk)} disk free"
        if group is not None and group.strict:
            here = select(func.count()).select_from(AllocationRow).where(
                AllocationRow.placement_group_id == group.id)
            if moving is not None:
                here = here.where(AllocationRow.id != moving)
            if group.policy == SPREAD and s.scalar(
                    here.where(AllocationRow.member_id == row.id)):
                return f"already hosts one of placement group {group.name}"
            if group.policy != SPREAD and s.scalar(
                    here.where(AllocationRow.member_id != row.id)):
                return f"does not host placement group {group.name}"
        return None

    def release(self, project: str, instance: str) -> Allocation:
        """The instance is gone: its resources are free again on its member."""
        with self.db.session(modify=True) as s:
            alloc = self._allocation(s, project, instance)
            done = self._allocation_out(s, project, alloc)
            row = s.scalar(select(MemberRow).where(MemberRow.id == alloc.member_id)
                           .with_for_update())
            assert row is not None
            self._unuse(row, alloc)
            s.delete(alloc)
            return done

    def move(self, project: str, instance: str, to: str, check: bool = True) -> Allocation:
        """Move the allocation to member ``to`` (evacuation, rebalance, recovery),
        re-checking there what a new allocation would be checked for: state, room and
        the placement group's strict rule; ``LostRace`` (nothing changed) if it fails.
        ``check`` False: no check (an undo, back to where it was)."""
        with self.db.session(modify=True) as s:
            alloc = self._allocation(s, project, instance)
            group = None if alloc.placement_group_id is None else s.scalar(
                select(PlacementGroupRow).where(
                    PlacementGroupRow.id == alloc.placement_group_id).with_for_update())
            target = self._row(s, to).id
            ids = sorted({alloc.member_id, target})   # one lock order
            rows = {r.id: r for r in s.scalars(select(MemberRow).where(
                MemberRow.id.in_(ids)).order_by(MemberRow.id).with_for_update())}
            src, dst = rows[alloc.member_id], rows[target]
            if src.id == dst.id:
                return self._allocation_out(s, project, alloc)
            need = Resources(alloc.cpus, alloc.memory, alloc.disk)
            if check and (why := self._refusal(s, dst, need, group, alloc.id)) is not None:
                raise LostRace({to: why})
            self._unuse(src, alloc)
            dst.used_cpus += alloc.cpus
            dst.used_memory += alloc.memory
            dst.used_disk += alloc.disk
            dst.instances += 1
            alloc.member_id = dst.id
            s.flush()
            return self._allocation_out(s, project, alloc)

    def allocation(self, project: str, instance: str) -> Allocation | None:
        """An instance's allocation (None: it has none, made before the cluster)."""
        with self.db.session() as s:
            pid = project_id(s, project)
            row = s.scalar(select(AllocationRow).where(AllocationRow.project_id == pid,
                                                       AllocationRow.instance == instance))
            return None if row is None else self._allocation_out(s, project, row)

    @staticmethod
    def _unuse(row: MemberRow, alloc: AllocationRow) -> None:
        row.used_cpus -= alloc.cpus
        row.used_memory -= alloc.memory
        row.used_disk -= alloc.disk
        row.instances -= 1

    def _allocation(self, s: Session, project: str, instance: str) -> AllocationRow:
        row = s.scalar(select(AllocationRow).where(
            AllocationRow.project_id == project_id(s, project),
            AllocationRow.instance == instance).with_for_update())
        if row is None:
            raise NotFoundError("allocation", instance)
        return row

    @staticmethod
    def _allocation_out(s: Session, project: str, a: AllocationRow) -> Allocation:
        member = s.scalar(select(MemberRow.name).where(MemberRow.id == a.member_id))
        group = None if a.placement_group_id is None else s.scalar(
            select(PlacementGroupRow.name).where(PlacementGroupRow.id == a.placement_group_id))
        return Allocation(project, a.instance, str(member), Resources(a.cpus, a.memory, a.disk),
                          group)

    def allocations(self, member: str | None = None) -> list[Allocation]:
        with self.db.session() as s:
            q = (select(AllocationRow, ProjectRow.name, MemberRow.name, PlacementGroupRow.name)
                 .join(ProjectRow, AllocationRow.project_id == ProjectRow.id)
                 .join(MemberRow, AllocationRow.member_id == MemberRow.id)
                 .outerjoin(PlacementGroupRow,
                            AllocationRow.placement_group_id == PlacementGroupRow.id)
                 .order_by(AllocationRow.id))
            if member is not None:
                q = q.where(MemberRow.name == member)
            return [Allocation(p, a.instance, m, Resources(a.cpus, a.memory, a.disk), g)
                    for a, p, m, g in s.execute(q)]
