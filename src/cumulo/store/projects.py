"""Projects in the store: their settings, what they hold, and the quota gate.

``admit`` is called inside the transaction that inserts an instance, a network or a
volume: it takes the project's row lock first (``SELECT ... FOR UPDATE`` on PostgreSQL;
on SQLite the session began with ``BEGIN IMMEDIATE``, the database's write lock), then
counts and checks. Two requests that race, even from two daemons sharing the store,
are serialized there, so a quota cannot be overshot.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from sqlalchemy import Row, bindparam, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cumulo.domain import projects as rules
from cumulo.domain.models import Project
from cumulo.errors import ConflictError, InvalidInputError, NotFoundError, StoreError
from cumulo.store.db import Database
from cumulo.store.tables import (
    PROJECTS,
    IdentityRoleRow,
    ImageRow,
    InstanceRow,
    NetworkRow,
    OperationRow,
    ProjectRow,
    SecurityGroupRow,
    VolumeRow,
)


def project_of(row: ProjectRow | Row[Any]) -> Project:
    return Project(row.name, row.description, row.created_at, dict(row.config or {}))


def project_row(s: Session, name: str, lock: bool = False) -> ProjectRow:
    """The project's row; ``lock``: held until the transaction ends (on PostgreSQL a row
    lock; SQLite's sessions that write hold the database's write lock already)."""
    q = select(ProjectRow).where(ProjectRow.name == name)
    row = s.scalar(q.with_for_update() if lock else q)
    if row is None:
        raise NotFoundError("project", name)
    return row


def project_id(s: Session, name: str) -> int:
    """The project's id (no lock), for the rows that name it."""
    pid = s.scalar(select(ProjectRow.id).where(ProjectRow.name == name))
    if pid is None:
        raise NotFoundError("project", name)
    return pid


NamedRow = TypeVar("NamedRow", InstanceRow, NetworkRow, SecurityGroupRow, VolumeRow)


def named_row(s: Session, table: type[NamedRow], project: str, name: str,
              what: str) -> NamedRow:
    """The row of ``table`` called ``name`` in ``project``; NotFoundError(``what``)
    without one (or without the project)."""
    row = s.scalar(select(table).where(table.project_id == project_id(s, project),
                                       table.name == name))
    if row is None:
        raise NotFoundError(what, name)
    return row


def usage_of(s: Session, project_id: int) -> rules.Usage:
    """What the project holds, counted as its quotas count (declared sizes)."""
    u = rules.Usage()
    for type_, limits, root in s.execute(select(
            InstanceRow.type, InstanceRow.limits, InstanceRow.root).where(
            InstanceRow.project_id == project_id)):
        u.instances += 1
        if type_ in rules.VM_TYPES:
            u.virtual_machines += 1
        else:
            u.containers += 1
        u.cpu += float((limits or {}).get("cpu") or 0)
        u.memory += int((limits or {}).get("memory") or 0)
        u.disk += int((root or {}).get("size") or 0)
    vols = s.execute(select(func.count(), func.coalesce(func.sum(VolumeRow.size), 0)).where(
        VolumeRow.project_id == project_id)).one()
    u.volumes, u.disk = int(vols[0]), u.disk + int(vols[1])
    u.networks = _count(s, NetworkRow, project_id)
    u.security_groups = _count(s, SecurityGroupRow, project_id)
    u.images = _count(s, ImageRow, project_id)
    return u


def _count(s: Session, table: type[NetworkRow] | type[SecurityGroupRow] | type[ImageRow],
           pid: int) -> int:
    return int(s.scalar(select(func.count()).select_from(table).where(
        table.project_id == pid)) or 0)


# made once, executed with its parameter (store/repo.py says why)
ADMIT = select(PROJECTS).where(PROJECTS.c.name == bindparam("project")).with_for_update()


def admit(s: Session, project: str, need: rules.Need) -> Row[Any]:
    """Lock the project, check ``need`` against its quotas; its row (id, name, config...)."""
    row = s.execute(ADMIT, {"project": project}).first()
    if row is None:
        raise NotFoundError("project", project)
    config = dict(row.config or {})
    if any(k in config for k in rules.LIMITS):
        rules.check_quota(project, config, usage_of(s, row.id), need)
    return row


class ProjectStore:
    """Projects; each method is one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, name: str, description: str = "",
               config: Mapping[str, str] | None = None) -> Project:
        try:
            with self.db.session() as s:
                row = ProjectRow(name=name, description=description, config=dict(config or {}))
                s.add(row)
                s.flush()
                return project_of(row)
        except StoreError as err:
            if isinstance(err.__cause__, IntegrityError):
                raise ConflictError(f"project {name!r} already exists") from err
            raise

    def get(self, name: str) -> Project:
        with self.db.session() as s:
            return project_of(project_row(s, name))

    def list(self) -> list[Project]:
        with self.db.session() as s:
            return [project_of(r) for r in s.scalars(select(ProjectRow).order_by(ProjectRow.name))]

    def usage(self, name: str) -> rules.Usage:
        with self.db.session() as s:
            return usage_of(s, project_row(s, name).id)

    def update(self, name: str, changes: Mapping[str, str | None],
               description: str | None = None, replace: bool = False) -> Project:
        """Set (a value) or unset (None) settings, or with ``replace`` make ``changes`` the
        whole config. A limit below what the project already uses is refused."""
        with self.db.session(modify=True) as s:
            row = project_row(s, name, lock=True)
            config = {} if replace else dict(row.config or {})
            for key, value in changes.items():
                if value is None:
                    config.pop(key, None)
                else:
                    config[key] = value
            used = usage_of(s, row.id)
            feature = config.get("features.images") != (row.config or {}).get("features.images")
            if feature and (used.instances or used.images):
                raise ConflictError(
                    f"cannot change features.images of project {name!r} while it holds"
                    " instances or images")
            for key in rules.LIMITS:
                if key in config and float(config[key]) < used.of(key):
                    raise InvalidInputError(
                        f"cannot set {key}={rules.show(key, config[key])}: project {name!r}"
                        f" already uses {rules.show(key, used.of(key))}")
            row.config = config
            if description is not None:
                row.description = description
            s.flush()
            return project_of(row)

    def delete(self, name: str) -> None:
        """Only an empty project goes; its finished operations and the roles identities
        held in it go with it."""
        if name == rules.DEFAULT:
            raise InvalidInputError("the project 'default' cannot be deleted")
        with self.db.session(modify=True) as s:
            row = project_row(s, name, lock=True)
            u = usage_of(s, row.id)
            held = [f"{n} {what}{'' if n == 1 else 's'}" for n, what in (
                (u.instances, "instance"), (u.networks, "network"), (u.volumes, "volume"),
                (u.security_groups, "security group"), (u.images, "image")) if n]
            if held:
                raise ConflictError(f"project {name!r} is not empty: it holds {', '.join(held)}")
            s.execute(delete(OperationRow).where(OperationRow.project == name))
            # a project made later under this name is someone else's: no role carries over
            s.execute(delete(IdentityRoleRow).where(IdentityRoleRow.project == name))
            s.delete(row)

