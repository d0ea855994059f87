"""Typed reads and writes of security groups, NIC groups and bandwidth, and port forwards."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cumulo.domain.acl import AclRule, SecurityGroup
from cumulo.errors import ConflictError, NotFoundError, StoreError
from cumulo.store.db import Database
from cumulo.store.projects import named_row, project_id
from cumulo.store.tables import (
    ForwardRow,
    InstanceRow,
    NetworkRow,
    NicRow,
    ProjectRow,
    SecurityGroupRow,
)


@dataclass(frozen=True)
class Forward:
    project: str
    network: str
    listen_address: str
    listen_port: int
    protocol: str
    instance: str
    target_port: int
    target_ip: str = ""
    created_at: datetime | None = None
    location: str | None = None   # the cluster member the instance runs on


def _rule(d: dict[str, Any]) -> AclRule:
    ports = d.get("ports")
    return AclRule(direction=d["direction"], protocol=d["protocol"],
                   ports=(int(ports[0]), int(ports[1])) if ports else None,
                   cidr=d.get("cidr"), group=d.get("group"))


class FirewallStore:
    """Each method is one transaction."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # --- security groups ---
    def _group_row(self, s: Session, project: str, name: str) -> SecurityGroupRow:
        return named_row(s, SecurityGroupRow, project, name, "security group")

    @staticmethod
    def _group(project: str, row: SecurityGroupRow) -> SecurityGroup:
        return SecurityGroup(project=project, name=row.name, description=row.description,
                             rules=[_rule(r) for r in row.rules or []],
                             created_at=row.created_at)

    def add_group(self, g: SecurityGroup) -> SecurityGroup:
        try:
            with self.db.session() as s:
                row = SecurityGroupRow(project_id=project_id(s, g.project), name=g.name,
                                       description=g.description,
                                       rules=[asdict(r) for r in g.rules])
                s.add(row)
                s.flush()
                return self._group(g.project, row)
        except StoreError as err:
            if isinstance(err.__cause__, IntegrityError):
                raise ConflictError(f"security group {g.name!r} already exists") from None
            raise

    def get_group(self, project: str, name: str) -> SecurityGroup:
        with self.db.session() as s:
            return self._group(project, self._group_row(s, project, name))

    def list_groups(self, project: str | None = None) -> list[SecurityGroup]:
        with self.db.session() as s:
            q = (select(SecurityGroupRow, ProjectRow.name)
                 .join(ProjectRow, SecurityGroupRow.project_id == ProjectRow.id)
                 .order_by(ProjectRow.name, SecurityGroupRow.name))
            if project is not None:
                q = q.where(ProjectRow.name == project)
            return [self._group(p, row) for row, p in s.execute(q)]

    def set_rules(self, project: str, name: str, rules: list[AclRule]) -> SecurityGroup:
        with self.db.session() as s:
            row = self._group_row(s, project, name)
            row.rules = [asdict(r) for r in rules]
            s.flush()
            return self._group(project, row)

    def delete_group(self, project: str, name: str) -> None:
        with self.db.session() as s:
            s.delete(self._group_row(s, project, name))

    def group_users(self, project: str, name: str) -> list[str]:
        """Instances with a NIC in the group (``instance/ethN``)."""
        with self.db.session() as s:
            q = (select(InstanceRow.name, NicRow.idx, NicRow.groups)
                 .join(NicRow, NicRow.instance_id == InstanceRow.id)
                 .where(InstanceRow.project_id == project_id(s, project)))
            return sorted(f"{inst}/eth{idx}" for inst, idx, groups in s.execute(q)
                          if name in (groups or []))

    # --- NIC settings ---
    def _nic_rows(self, s: Session, project: str, instance: str,
                  network: str | None) -> list[NicRow]:
        inst = named_row(s, InstanceRow, project, instance, "instance")
        q = (select(NicRow, NetworkRow.name).join(NetworkRow, NicRow.network_id == NetworkRow.id)
             .where(NicRow.instance_id == inst.id).order_by(NicRow.idx)
             .with_for_update(of=NicRow))  # callers merge into the rows' JSON
        rows = [(n, net) for n, net in s.execute(q)]
        if network is not None:
            rows = [(n, net) for n, net in rows if net == network]
            if not rows:
                raise NotFoundError("NIC on network", f"{instance}/{network}")
        return [n for n, _ in rows]

    def set_nic_groups(self, project: str, instance: str, network: str | None,
                       add: str | None = None, remove: str | None = None) -> int:
        """Add or remove a group on the instance's NICs (all, or the one on ``network``)."""
        with self.db.session(modify=True) as s:
            rows = self._nic_rows(s, project, instance, network)
            changed = 0
            for row in rows:
                groups = list(row.groups or [])
                if add is not None and add not in groups:
                    groups.append(add)
                if remove is not None and remove in groups:
                    groups.remove(remove)
                if groups != list(row.groups or []):
                    row.groups, changed = groups, changed + 1
            return changed

    def set_nic_bandwidth(self, project: str, instance: str, network: str | None,
                          bandwidth: dict[str, int]) -> list[str]:
        """Merge ``bandwidth`` (0 removes a key) into the NICs; their host names."""
        with self.db.session(modify=True) as s:
            rows = self._nic_rows(s, project, instance, network)
            for row in rows:
                merged = {**(row.bandwidth or {}), **bandwidth}
                row.bandwidth = {k: v for k, v in merged.items() if v}
            return [row.host_name for row in rows]

    # --- forwards ---
    def add_forward(self, f: Forward) -> None:
        try:
            with self.db.session() as s:
                pid = project_id(s, f.project)
                net = s.scalar(select(NetworkRow).where(NetworkRow.project_id == pid,
                                                        NetworkRow.name == f.network))
                if net is None:
                    raise NotFoundError("network", f.network)
                inst = s.scalar(select(InstanceRow).where(InstanceRow.project_id == pid,
                                                          InstanceRow.name == f.instance))
                if inst is None:
                    raise NotFoundError("instance", f.instance)
                if s.scalar(select(NicRow.id).where(NicRow.instance_id == inst.id,
                                                    NicRow.network_id == net.id)) is None:
                    raise ConflictError(f"instance {f.instance!r} has no NIC on network"
                                        f" {f.network!r}")
                s.add(ForwardRow(network_id=net.id, listen_address=f.listen_address,
                                 listen_port=f.listen_port, protocol=f.protocol,
                                 instance_id=inst.id, target_port=f.target_port))
                s.flush()
        except StoreError as err:
            if isinstance(err.__cause__, IntegrityError):
                raise ConflictError(f"{f.protocol} {f.listen_address}:{f.listen_port} is"
                                    " already forwarded") from None
            raise

    def list_forwards(self, project: str | None = None,
                      network: str | None = None) -> list[Forward]:
        with self.db.session() as s:
            q = (select(ForwardRow, NetworkRow, InstanceRow.name, NicRow.ip, ProjectRow.name,
                        InstanceRow.location)
                 .join(NetworkRow, ForwardRow.network_id == NetworkRow.id)
                 .join(ProjectRow, NetworkRow.project_id == ProjectRow.id)
                 .join(InstanceRow, ForwardRow.instance_id == InstanceRow.id)
                 .join(NicRow, (NicRow.instance_id == InstanceRow.id)
                       & (NicRow.network_id == NetworkRow.id))
                 .order_by(ForwardRow.listen_address, ForwardRow.listen_port))
            if project is not None:
                q = q.where(ProjectRow.name == project)
            if network is not None:
                q = q.where(NetworkRow.name == network)
            return [Forward(project=p, network=net.name, listen_address=f.listen_address,
                            listen_port=f.listen_port, protocol=f.protocol, instance=inst,
                            target_port=f.target_port, target_ip=ip, created_at=f.created_at,
                            location=where)
                    for f, net, inst, ip, p, where in s.execute(q)]

    def delete_forward(self, project: str, network: str, listen_address: str,
                       listen_port: int, protocol: str) -> None:
        with self.db.session() as s:
            pid = project_id(s, project)
            row = s.scalar(select(ForwardRow).join(
                NetworkRow, ForwardRow.network_id == NetworkRow.id).where(
                NetworkRow.project_id == pid, NetworkRow.name == network,
                ForwardRow.listen_address == listen_address,
                ForwardRow.listen_port == listen_port, ForwardRow.protocol == protocol))
            if row is None:
                raise NotFoundError("forward", f"{protocol} {listen_address}:{listen_port}")
            s.delete(row)
