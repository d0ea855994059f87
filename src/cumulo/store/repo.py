"""Typed reads and writes of projects, images, instances, networks and operations."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from sqlalchemy import Row, and_, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cumulo.domain.lifecycle import State
from cumulo.domain.limits import Limits
from cumulo.domain.models import (
    VNI_FIRST,
    VNI_LAST,
    Image,
    Instance,
    Network,
    Nic,
    Operation,
    OpStatus,
    Project,
    Tunnel,
    default_host_id,
)
from cumulo.domain.projects import Need, instance_need, private_images
from cumulo.errors import ConflictError, NotFoundError, StoreError
from cumulo.store.db import Database
from cumulo.store.projects import (
    ProjectStore,
    admit,
    named_row,
    project_id,
    project_of,
    project_row,
)
from cumulo.store.tables import (
    ALIASES,
    IMAGES,
    INSTANCES,
    NETWORKS,
    OPERATIONS,
    PROJECTS,
    AllocationRow,
    ImageAliasRow,
    ImageRow,
    InstanceRow,
    NetworkRow,
    NicRow,
    OperationRow,
    ProjectRow,
    TunnelRow,
    utcnow,
)

DEFAULT_PROJECT = "default"

# a change that goes into another store call's transaction (made by a ``*_write`` method)
StoreWrite = Callable[[Session], None]

# A launch's writes and an operation's end, each statement made once and executed with
# its values as parameters. Made per call with .values(), SQLAlchemy turned each value
# into a bound parameter and walked them all for the statement's cache key: about half
# of the Python time of a launch's insert.
ADD_INSTANCE = insert(INSTANCES).returning(INSTANCES.c.id)
ADD_OPERATION = insert(OPERATIONS)
END_OPERATION = update(OPERATIONS).where(OPERATIONS.c.id == bindparam("op_id"))
SET_STATE = update(INSTANCES).where(
    INSTANCES.c.project_id == select(PROJECTS.c.id).where(
        PROJECTS.c.name == bindparam("in_project")).scalar_subquery(),
    INSTANCES.c.name == bindparam("instance"))
# and its reads, and an exec's
PROJECT_AND_NETWORK = select(PROJECTS, NETWORKS.c.id.label("network_id")).outerjoin(
    NETWORKS, and_(NETWORKS.c.project_id == PROJECTS.c.id,
                   NETWORKS.c.name == bindparam("network"))
).where(PROJECTS.c.name == bindparam("project"))
IMAGE_BY_ALIAS = select(IMAGES).join(ALIASES, ALIASES.c.image_id == IMAGES.c.id).where(
    ALIASES.c.project_id == bindparam("pid"), ALIASES.c.name == bindparam("ref"))
IMAGE_ID = select(IMAGES.c.id).where(IMAGES.c.project_id == bindparam("pid"),
                                     IMAGES.c.fingerprint == bindparam("fingerprint"))
EXEC_TARGET = select(INSTANCES.c.type, INSTANCES.c.host_id, INSTANCES.c.state,
                     INSTANCES.c.location).join(
    PROJECTS, INSTANCES.c.project_id == PROJECTS.c.id).where(
    PROJECTS.c.name == bindparam("project"), INSTANCES.c.name == bindparam("instance"))


def _more(row: InstanceRow, limits: Limits) -> Need:
    """What new ``limits`` add to the project's declared cpu and memory."""
    old = Limits.from_dict(dict(row.limits or {}))
    return Need(cpu=(limits.cpu or 0) - (old.cpu or 0),
                memory=(limits.memory or 0) - (old.memory or 0),
                declared={"cpu": limits.cpu is not None, "memory": limits.memory is not None})


class Store:
    """The daemon's state. Each method is one transaction."""

    def __init__(self, url: str) -> None:
        self.db = Database(url)
        self.projects = ProjectStore(self.db)
        self.ensure_project(DEFAULT_PROJECT, "Default project")

    def close(self) -> None:
        self.db.close()

    # projects
    def ensure_project(self, name: str, description: str = "") -> Project:
        with self.db.session() as s:
            row = s.scalar(select(ProjectRow).where(ProjectRow.name == name))
            if row is None:
                row = ProjectRow(name=name, description=description)
                s.add(row)
                s.flush()
            return Project(row.name, row.description, row.created_at, dict(row.config or {}))

    def list_projects(self) -> list[Project]:
        return self.projects.list()

    # images: each belongs to a project; a project without features.images uses default's
    def _images_pid(self, s: Session, project: str) -> int:
        """The id of the project whose images ``project`` sees."""
        return self._images_pid_of(s, project_row(s, project))

    @staticmethod
    def _images_pid_of(s: Session, row: ProjectRow | Row[Any]) -> int:
        if private_images(row.name, dict(row.config or {})):
            return row.id
        return row.id if row.name == DEFAULT_PROJECT else project_id(s, DEFAULT_PROJECT)

    def _image_row(self, s: Session, ref: str, pid: int) -> ImageRow:
        row = s.scalar(
            select(ImageRow).join(ImageAliasRow, ImageAliasRow.image_id == ImageRow.id)
            .where(ImageAliasRow.project_id == pid, ImageAliasRow.name == ref)
        )
        if row is None and len(ref) >= 12:
            rows = list(s.scalars(select(ImageRow).where(
                ImageRow.project_id == pid,
                ImageRow.fingerprint.startswith(ref.lower(), autoescape=True))))
            if len(rows) > 1:
                raise ConflictError(f"image prefix {ref!r} is ambiguous")
            row = rows[0] if rows else None
        if row is None:
            raise NotFoundError("image", ref)
        return row

    def _image(self, s: Session, row: ImageRow | Row[Any], aliases: bool = True) -> Image:
        """``aliases=False``: without them (one query less), for a caller that uses none."""
        names = list(s.scalars(
            select(ImageAliasRow.name).where(ImageAliasRow.image_id == row.id)
            .order_by(ImageAliasRow.name)
        )) if aliases else []
        return Image(
            fingerprint=row.fingerprint, kind=row.kind, os=row.os, release=row.release,
            architecture=row.architecture, description=row.description, size=row.size,
            command=list(row.command), aliases=names, created_at=row.created_at,
            properties=dict(row.properties or {}),
        )

    def put_image(self, image: Image, project: str = DEFAULT_PROJECT) -> Image:
        """Insert or refresh an image by fingerprint and point its aliases at it."""
        with self.db.session() as s:
            pid = self._images_pid(s, project)
            row = s.scalar(select(ImageRow).where(ImageRow.project_id == pid,
                                                  ImageRow.fingerprint == image.fingerprint))
            if row is None:
                row = ImageRow(project_id=pid, fingerprint=image.fingerprint)
                s.add(row)
            row.kind, row.os, row.release = image.kind, image.os, image.release
            row.architecture, row.description = image.architecture, image.description
            row.size, row.command = image.size, list(image.command)
            row.properties = dict(image.properties)
            s.flush()
            for alias in image.aliases:
                self._point_alias(s, alias, pid, row.id)
            s.flush()
            return self._image(s, row)

    @staticmethod
    def _point_alias(s: Session, alias: str, pid: int, image_id: int) -> None:
        a = s.get(ImageAliasRow, (pid, alias))
        if a is None:
            s.add(ImageAliasRow(project_id=pid, name=alias, image_id=image_id))
        else:
            a.image_id = image_id

    def get_image(self, ref: str, project: str = DEFAULT_PROJECT) -> Image:
        """By alias, full fingerprint, or a fingerprint prefix of 12+ characters, among
        the images ``project`` sees."""
        with self.db.session() as s:
            return self._image(s, self._image_row(s, ref, self._images_pid(s, project)))

    def launch_reads(self, ref: str, project: str, network: str | None = None
                     ) -> tuple[Image, Project, bool]:
        """What a launch checks first, read in one transaction: the image ``ref`` among
        those ``project`` sees (its aliases left out), the project, and whether it has a
        network named ``network`` (False for None)."""
        with self.db.session() as s:
            row = s.execute(PROJECT_AND_NETWORK, {"project": project,
                                                   "network": network or ""}).first()
            if row is None:
                raise NotFoundError("project", project)
            pid = self._images_pid_of(s, row)
            # by alias; a fingerprint or its prefix as get_image finds it
            image = s.execute(IMAGE_BY_ALIAS, {"pid": pid, "ref": ref}).first()
            return (self._image(s, image if image is not None else self._image_row(s, ref, pid),
                                aliases=False), project_of(row),
                    network is not None and row.network_id is not None)

    def list_images(self, project: str = DEFAULT_PROJECT) -> list[Image]:
        with self.db.session() as s:
            pid = self._images_pid(s, project)
            return [self._image(s, r) for r in s.scalars(
                select(ImageRow).where(ImageRow.project_id == pid).order_by(ImageRow.id))]

    def image_users(self, fingerprint: str, project: str = DEFAULT_PROJECT) -> list[str]:
        """PROJECT/NAME of the instances made from the image (any project may use
        default's)."""
        with self.db.session() as s:
            q = (select(ProjectRow.name, InstanceRow.name)
                 .join(ImageRow, InstanceRow.image_id == ImageRow.id)
                 .join(ProjectRow, InstanceRow.project_id == ProjectRow.id)
                 .where(ImageRow.project_id == self._images_pid(s, project),
                        ImageRow.fingerprint == fingerprint))
            return [f"{p}/{n}" for p, n in s.execute(q)]

    def image_held_elsewhere(self, fingerprint: str) -> bool:
        """Whether some project still has an image with these files."""
        with self.db.session() as s:
            return s.scalar(select(ImageRow.id).where(
                ImageRow.fingerprint == fingerprint).limit(1)) is not None

    def delete_image(self, fingerprint: str, project: str = DEFAULT_PROJECT) -> None:
        with self.db.session() as s:
            row = self._image_row(s, fingerprint, self._images_pid(s, project))
            for a in s.scalars(select(ImageAliasRow).where(ImageAliasRow.image_id == row.id)):
                s.delete(a)
            s.delete(row)

    def set_alias(self, alias: str, ref: str, project: str = DEFAULT_PROJECT) -> Image:
        with self.db.session() as s:
            pid = self._images_pid(s, project)
            row = self._image_row(s, ref, pid)
            self._point_alias(s, alias, pid, row.id)
            s.flush()
            return self._image(s, row)

    def delete_alias(self, alias: str, project: str = DEFAULT_PROJECT) -> None:
        with self.db.session() as s:
            a = s.get(ImageAliasRow, (self._images_pid(s, project), alias))
            if a is None:
                raise NotFoundError("image alias", alias)
            s.delete(a)

    # instances
    def _instance_row(self, s: Session, project: str, name: str) -> InstanceRow:
        return named_row(s, InstanceRow, project, name, "instance")

    def _instance(self, s: Session, row: InstanceRow,
                  names: tuple[str, str] | None = None, nics: list[Nic] | None = None
                  ) -> Instance:
        """The instance of ``row``; ``names``: its project's name and image's fingerprint,
        and ``nics`` its NICs, when the queries that found the row read them already."""
        if names is None:
            project = s.get(ProjectRow, row.project_id)
            image = s.get(ImageRow, row.image_id)
            if project is None or image is None:
                raise StoreError(f"instance {row.name} has a dangling reference")
            names = (project.name, image.fingerprint)
        return Instance(
            project=names[0], name=row.name, type=row.type, image=names[1],
            state=State(row.state), limits=Limits.from_dict(dict(row.limits)),
            privileged=row.privileged, command=list(row.command),
            options=dict(row.options or {}), exit_code=row.exit_code,
            last_error=row.last_error, created_at=row.created_at,
            nics=self._nics(s, row.id) if nics is None else nics,
            root=dict(row.root) if row.root is not None else None,
            location=row.location, origin=row.origin, ephemeral=row.ephemeral,
            fixed_host_id=row.host_id,
        )

    @staticmethod
    def _nics(s: Session, instance_id: int) -> list[Nic]:
        return Store._nics_of(s, [instance_id]).get(instance_id, [])

    @staticmethod
    def _nics_of(s: Session, instance_ids: list[int]) -> dict[int, list[Nic]]:
        """The NICs of these instances, in index order, by instance id: one query."""
        if not instance_ids:
            return {}
        q = (select(NicRow, NetworkRow.name).join(NetworkRow, NicRow.network_id == NetworkRow.id)
             .where(NicRow.instance_id.in_(instance_ids))
             .order_by(NicRow.instance_id, NicRow.idx))
        out: dict[int, list[Nic]] = {}
        for n, net in s.execute(q):
            out.setdefault(n.instance_id, []).append(Nic(
                network=net, index=n.idx, mac=n.mac, ip=n.ip, host_name=n.host_name,
                groups=list(n.groups or []), bandwidth=dict(n.bandwidth or {})))
        return out

    def add_instance(self, inst: Instance, op: Operation | None = None) -> Instance:
        """Insert a new instance; a duplicate name in the project is a ConflictError, one
        past a quota of the project a QuotaExceededError (checked under its row lock).
        ``op``: the operation that will create it, recorded in the same commit. Without a
        ``fixed_host_id`` it gets a free one if a renamed instance kept its derived one."""
        need = instance_need(inst.type, inst.limits.cpu, inst.limits.memory,
                             (inst.root or {}).get("size"))
        try:
            with self.db.session(modify=True) as s:
                project = admit(s, inst.project, need)
                image_id = s.scalar(IMAGE_ID, {"pid": self._images_pid_of(s, project),
                                               "fingerprint": inst.image})
                if image_id is None:
                    raise NotFoundError("image", inst.image)
                fixed = inst.fixed_host_id or self._free_host_id(s, inst.project, inst.name)
                created = utcnow()
                row_id = s.scalar(ADD_INSTANCE, {
                    "project_id": project.id, "name": inst.name,
                    "type": inst.type, "image_id": image_id, "state": inst.state.value,
                    "limits": inst.limits.to_dict(), "privileged": inst.privileged,
                    "command": list(inst.command), "options": dict(inst.options),
                    "root": dict(inst.root) if inst.root is not None else None,
                    "location": inst.location, "ephemeral": inst.ephemeral,
                    "host_id": fixed, "created_at": created})
                for nic in inst.nics:
                    self._add_nic_row(s, row_id, inst.project, nic)
                if op is not None:
                    s.execute(ADD_OPERATION, self._operation_values(op))
                s.flush()
                # as written: not read back (a query for its NICs, an ORM object built)
                return replace(inst, created_at=created, nics=list(inst.nics),
                               exit_code=None, last_error=None, origin=None,
                               fixed_host_id=fixed)
        except StoreError as err:
            cause = err.__cause__
            if isinstance(cause, IntegrityError):
                if (cause.statement or "").startswith("INSERT INTO nics"):  # on every engine
                    raise ConflictError(
                        f"an address of instance {inst.name!r} was just taken: retry") from err
                raise ConflictError(f"instance {inst.name!r} already exists") from err
            raise

    def get_instance(self, project: str, name: str) -> Instance:
        with self.db.session() as s:   # one query for the row and its names (then the NICs)
            hit = s.execute(
                select(InstanceRow, ImageRow.fingerprint)
                .join(ProjectRow, InstanceRow.project_id == ProjectRow.id)
                .join(ImageRow, InstanceRow.image_id == ImageRow.id)
                .where(ProjectRow.name == project, InstanceRow.name == name)).first()
            if hit is None:
                project_id(s, project)   # an unknown project says so
                raise NotFoundError("instance", name)
            return self._instance(s, hit[0], (project, hit[1]))

    def exec_target(self, project: str, name: str) -> tuple[str, str, State, str | None]:
        """(type, host id, state, location) of an instance: what an exec needs, in one
        query of four columns (a whole instance is two queries and its NICs)."""
        with self.db.session() as s:
            hit = s.execute(EXEC_TARGET, {"project": project, "instance": name}).first()
            if hit is None:
                project_id(s, project)   # an unknown project says so
                raise NotFoundError("instance", name)
            type_, fixed, state, location = hit
            return type_, fixed or default_host_id(project, name), State(state), location

    def list_instances(self, project: str | None = None) -> list[Instance]:
        """Two queries however many there are (the rows with their names, then every NIC):
        the watchdog and the metrics history list them all every few seconds."""
        with self.db.session() as s:
            q = (select(InstanceRow, ProjectRow.name, ImageRow.fingerprint)
                 .join(ProjectRow, InstanceRow.project_id == ProjectRow.id)
                 .join(ImageRow, InstanceRow.image_id == ImageRow.id)
                 .order_by(InstanceRow.project_id, InstanceRow.name))
            if project is not None:
                q = q.where(InstanceRow.project_id == project_id(s, project))
            hits = s.execute(q).all()
            nics = self._nics_of(s, [row.id for row, _, _ in hits])
            return [self._instance(s, row, (pname, fp), nics.get(row.id, []))
                    for row, pname, fp in hits]

    def update_instance(self, project: str, name: str, **fields: Any) -> Instance:
        """Set columns: state, limits (Limits), options, exit_code, last_error, location,
        origin.
        New limits are checked against the project's cpu and memory quotas under its row
        lock."""
        with self.db.session(modify="limits" in fields) as s:
            row = self._instance_row(s, project, name)
            for key, value in fields.items():
                if key == "state":
                    value = State(value).value
                elif key == "limits":
                    admit(s, project, _more(row, value))
                    value = value.to_dict()
                elif key == "options":
                    value = dict(value)
                elif key not in ("exit_code", "last_error", "location", "origin"):
                    raise StoreError(f"cannot update instance field {key}")
                setattr(row, key, value)
            s.flush()
            return self._instance(s, row)

    @staticmethod
    def state_write(project: str, name: str, state: State) -> StoreWrite:
        """The instance's new state, as a change for another call's transaction (an
        operation's end: ``end_operation(also=...)``); one UPDATE, no read."""
        def write(s: Session) -> None:
            hit = s.execute(SET_STATE, {"in_project": project, "instance": name,
                                        "state": State(state).value})
            if getattr(hit, "rowcount", 0) != 1:
                raise NotFoundError("instance", name)
        return write

    def rename_instance(self, project: str, name: str, new: str) -> Instance:
        """Give the instance another name; its host id stays what it was (a taken name is
        a ConflictError)."""
        try:
            with self.db.session() as s:
                row = self._instance_row(s, project, name)
                row.host_id = row.host_id or default_host_id(project, name)
                row.name = new
                for alloc in s.scalars(select(AllocationRow).where(
                        AllocationRow.project_id == row.project_id,
                        AllocationRow.instance == name)):
                    alloc.instance = new
                s.flush()
                return self._instance(s, row)
        except StoreError as err:
            if isinstance(err.__cause__, IntegrityError):
                raise ConflictError(f"instance {new!r} already exists") from err
            raise

    @staticmethod
    def _free_host_id(s: Session, project: str, name: str) -> str | None:
        """None (the derived host id) unless an instance that kept it from a former name
        holds it: then the first free ``<derived>_<n>``. One query of an index's worth of
        rows (another instance's own derived id is never this one: names have no '_')."""
        derived = default_host_id(project, name)
        taken = {h for h in s.scalars(select(INSTANCES.c.host_id).where(
            INSTANCES.c.host_id.startswith(derived, autoescape=True)))
            if h is not None and (h == derived or h.startswith(derived + "_"))}
        if derived not in taken:
            return None
        return next(f"{derived}_{n}" for n in itertools.count(2)
                    if f"{derived}_{n}" not in taken)

    def delete_instance(self, project: str, name: str) -> None:
        with self.db.session() as s:
            row = self._instance_row(s, project, name)
            for nic in s.scalars(select(NicRow).where(NicRow.instance_id == row.id)):
                s.delete(nic)
            s.flush()
            s.delete(row)

    # networks
    def _network_row(self, s: Session, project: str, name: str) -> NetworkRow:
        return named_row(s, NetworkRow, project, name, "network")

    def _network(self, s: Session, row: NetworkRow) -> Network:
        project = s.get(ProjectRow, row.project_id)
        if project is None:
            raise StoreError(f"network {row.name} has a dangling project")
        return Network(project=project.name, name=row.name, subnet=row.subnet,
                       gateway=row.gateway, bridge=row.bridge, isolated=row.isolated,
                       created_at=row.created_at, dns_domain=row.dns_domain,
                       type=row.type or "bridge", vni=row.vni, mtu=row.mtu,
                       own_netns=bool(row.own_netns))

    def add_network(self, net: Network) -> Network:
        """Insert a network; a duplicate name in the project is a ConflictError, one past
        the project's limits.networks a QuotaExceededError."""
        try:
            with self.db.session(modify=True) as s:
                row = NetworkRow(project_id=admit(s, net.project, Need(networks=1)).id,
                                 name=net.name,
                                 subnet=net.subnet, gateway=net.gateway, bridge=net.bridge,
                                 isolated=net.isolated, dns_domain=net.dns_domain,
                                 type=net.type, vni=net.vni, mtu=net.mtu,
                                 own_netns=net.own_netns)
                if net.type == "overlay":
                    row.vni = self._vni(s, net.vni)
                s.add(row)
                s.flush()
                return self._network(s, row)
        except StoreError as err:
            if isinstance(err.__cause__, IntegrityError):
                if net.vni is None and net.type == "overlay" and "vni" in str(err.__cause__):
                    raise ConflictError("two overlays took the same VNI at once: try"
                                        " again") from err
                raise ConflictError(f"network {net.name!r} already exists") from err
            raise

    @staticmethod
    def _vni(s: Session, wanted: int | None) -> int:
        """``wanted`` if free, else a ConflictError; None: the lowest free VNI (the
        unique column settles a race between members)."""
        used = {v: n for v, n in s.execute(select(NetworkRow.vni, NetworkRow.name)
                                           .where(NetworkRow.vni.is_not(None)))}
        if wanted is not None:
            if wanted in used:
                raise ConflictError(f"VNI {wanted} is already used by network"
                                    f" {used[wanted]!r}")
            return wanted
        return next(v for v in range(VNI_FIRST, VNI_LAST + 1) if v not in used)

    # one member's side of an overlay network
    def set_tunnel(self, project: str, name: str, tunnel: Tunnel) -> None:
        """Record ``tunnel`` as its member's side of the network (replacing the old)."""
        with self.db.session(modify=True) as s:
            net = self._network_row(s, project, name)
            row = s.scalar(select(TunnelRow).where(TunnelRow.network_id == net.id,
                                                   TunnelRow.member == tunnel.member))
            if row is None:
                row = TunnelRow(network_id=net.id, member=tunnel.member)
                s.add(row)
            row.state, row.device, row.local = tunnel.state, tunnel.device, tunnel.local
            row.peers, row.updated_at = list(tunnel.peers), utcnow()

    def tunnels(self, project: str, name: str) -> list[Tunnel]:
        with self.db.session() as s:
            net = self._network_row(s, project, name)
            rows = s.scalars(select(TunnelRow).where(TunnelRow.network_id == net.id)
                             .order_by(TunnelRow.member))
            return [Tunnel(member=r.member, state=r.state, device=r.device, local=r.local,
                           peers=tuple(r.peers or ())) for r in rows]

    def get_network(self, project: str, name: str) -> Network:
        with self.db.session() as s:
            return self._network(s, self._network_row(s, project, name))

    def list_networks(self, project: str | None = None) -> list[Network]:
        """Networks of ``project``, or of every project (subnets are per host)."""
        with self.db.session() as s:
            q = select(NetworkRow).order_by(NetworkRow.project_id, NetworkRow.name)
            if project is not None:
                q = q.where(NetworkRow.project_id == project_id(s, project))
            return [self._network(s, r) for r in s.scalars(q)]

    def network_users(self, project: str, name: str) -> list[str]:
        """Names of the instances with a NIC on the network."""
        with self.db.session() as s:
            row = self._network_row(s, project, name)
            q = (select(InstanceRow.name).join(NicRow, NicRow.instance_id == InstanceRow.id)
                 .where(NicRow.network_id == row.id).order_by(InstanceRow.name).distinct())
            return list(s.scalars(q))

    def network_addresses(self, project: str, name: str) -> list[str]:
        """The addresses instances hold on the network."""
        with self.db.session() as s:
            row = self._network_row(s, project, name)
            return list(s.scalars(select(NicRow.ip).where(NicRow.network_id == row.id)))

    def network_nics(self, project: str, name: str) -> list[tuple[str, Nic]]:
        """(instance name, NIC) of every NIC on the network: its DHCP and DNS entries."""
        with self.db.session() as s:
            row = self._network_row(s, project, name)
            q = (select(InstanceRow.name, NicRow).join(NicRow, NicRow.instance_id == InstanceRow.id)
                 .where(NicRow.network_id == row.id).order_by(InstanceRow.name))
            return [(inst, Nic(network=name, index=n.idx, mac=n.mac, ip=n.ip,
                               host_name=n.host_name, groups=list(n.groups or []),
                               bandwidth=dict(n.bandwidth or {}))) for inst, n in s.execute(q)]

    def add_nic(self, project: str, instance: str, nic: Nic) -> Instance:
        """Record one more NIC of an instance (hot-plug); an address or index already
        taken is a ConflictError."""
        try:
            with self.db.session(modify=True) as s:
                row = self._instance_row(s, project, instance)
                self._add_nic_row(s, row.id, project, nic)
                s.flush()
                return self._instance(s, row)
        except StoreError as err:
            if isinstance(err.__cause__, IntegrityError):
                raise ConflictError(f"address {nic.ip} or eth{nic.index} of instance"
                                    f" {instance!r} was just taken: retry") from err
            raise

    def _add_nic_row(self, s: Session, instance_id: int, project: str, nic: Nic) -> None:
        net = self._network_row(s, project, nic.network)
        s.add(NicRow(instance_id=instance_id, network_id=net.id, idx=nic.index, mac=nic.mac,
                     ip=nic.ip, host_name=nic.host_name, groups=list(nic.groups),
                     bandwidth=dict(nic.bandwidth)))

    def remove_nic(self, project: str, instance: str, network: str) -> Instance:
        """Forget the instance's NIC on ``network`` (its address is free again)."""
        with self.db.session(modify=True) as s:
            row = self._instance_row(s, project, instance)
            net = self._network_row(s, project, network)
            for nic in s.scalars(select(NicRow).where(NicRow.instance_id == row.id,
                                                      NicRow.network_id == net.id)):
                s.delete(nic)
            s.flush()
            return self._instance(s, row)

    def delete_network(self, project: str, name: str) -> None:
        """Remove a network; one still used by an instance is a ConflictError."""
        with self.db.session() as s:
            row = self._network_row(s, project, name)
            users = list(s.scalars(select(NicRow.id).where(NicRow.network_id == row.id)))
            if users:
                raise ConflictError(f"network {name!r} is in use by {len(users)} NIC(s)")
            for t in s.scalars(select(TunnelRow).where(TunnelRow.network_id == row.id)):
                s.delete(t)
            s.flush()
            s.delete(row)

    # operations
    @staticmethod
    def _operation(row: OperationRow) -> Operation:
        return Operation(
            id=row.id, description=row.description, status=OpStatus(row.status),
            progress=row.progress, message=row.message, error=row.error,
            resources=dict(row.resources), created_at=row.created_at, updated_at=row.updated_at,
            project=row.project, error_type=row.error_type,
        )

    @staticmethod
    def _operation_row(op: Operation) -> OperationRow:
        return OperationRow(**Store._operation_values(op))

    @staticmethod
    def _operation_values(op: Operation) -> dict[str, Any]:
        """Its row's columns (the times: now, unless it has its own)."""
        created = op.created_at or utcnow()
        return {"id": op.id, "description": op.description, "status": op.status.value,
                "progress": op.progress, "message": op.message, "error": op.error,
                "resources": op.resources, "project": op.project, "created_at": created,
                "updated_at": op.updated_at or created}

    def add_operation(self, op: Operation) -> Operation:
        with self.db.session() as s:
            row = self._operation_row(op)
            s.add(row)
            s.flush()
            return self._operation(row)

    def update_operation(self, op_id: str, **fields: Any) -> Operation:
        with self.db.session() as s:
            row = s.get(OperationRow, op_id)
            if row is None:
                raise NotFoundError("operation", op_id)
            for key, value in fields.items():
                if key == "status":
                    value = OpStatus(value).value
                elif key == "error" and value is not None:
                    value = str(value)[:2048]
                elif key == "message":
                    value = str(value)[:255]
                setattr(row, key, value)
            row.updated_at = utcnow()
            s.flush()
            return self._operation(row)

    def end_operation(self, op: Operation, also: StoreWrite | None = None) -> Operation:
        """Record ``op`` as it ended (status, progress, message, error, resources): one
        UPDATE, nothing read back; ``also``: another change in the same commit. The
        operation as stored (message and error cut to their columns)."""
        op = replace(op, updated_at=utcnow(), message=str(op.message)[:255],
                     error=None if op.error is None else str(op.error)[:2048])
        with self.db.session() as s:
            if also is not None:
                also(s)
            hit = s.execute(END_OPERATION, {
                "op_id": op.id, "status": OpStatus(op.status).value, "progress": op.progress,
                "message": op.message, "error": op.error, "error_type": op.error_type,
                "resources": op.resources, "updated_at": op.updated_at})
            if getattr(hit, "rowcount", 0) != 1:
                raise NotFoundError("operation", op.id)
        return op

    def get_operation(self, op_id: str, project: str | None = None) -> Operation:
        """The operation; with ``project``, only one of that project (else not found)."""
        with self.db.session() as s:
            row = s.get(OperationRow, op_id)
            if row is None or project is not None and row.project != project:
                raise NotFoundError("operation", op_id)
            return self._operation(row)

    def list_operations(self, limit: int = 100, project: str | None = None
                        ) -> list[Operation]:
        with self.db.session() as s:
            q = select(OperationRow).order_by(OperationRow.created_at.desc()).limit(limit)
            if project is not None:
                q = q.where(OperationRow.project == project)
            return [self._operation(r) for r in s.scalars(q)]

    def fail_unfinished_operations(self, reason: str, member: str | None = None) -> int:
        """Operations cut off by a daemon stop can never finish: mark them failed.
        ``member``: in a cluster, only this member's (the others' may be running)."""
        with self.db.session() as s:
            rows = [r for r in s.scalars(select(OperationRow).where(
                OperationRow.status.in_([OpStatus.PENDING.value, OpStatus.RUNNING.value])))
                if member is None or (r.resources or {}).get("member") == member]
            for row in rows:
                row.status, row.error, row.updated_at = OpStatus.FAILURE.value, reason, utcnow()
            return len(rows)
