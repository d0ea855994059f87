"""ORM tables (SQLAlchemy 2). Change them only together with a new alembic revision."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A moment, read back as an aware UTC datetime on every engine: SQLite keeps no
    zone (it would read back naive), PostgreSQL's timestamptz comes in the session's."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value

    def process_result_value(self, value: datetime | None,
                             dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class ProjectRow(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # limits.*, default.*, restricted.*, features.* (domain/projects.py)
    config: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)


class ImageRow(Base):
    """An image of one project (``default``'s are shared with projects that keep none
    of their own, see ``features.images``); the files are per fingerprint, shared."""
    __tablename__ = "images"
    __table_args__ = (UniqueConstraint("project_id", "fingerprint",
                                       name="uq_image_project_fingerprint"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    fingerprint: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(32))
    os: Mapped[str] = mapped_column(String(63), default="")
    release: Mapped[str] = mapped_column(String(63), default="")
    architecture: Mapped[str] = mapped_column(String(32), default="")
    description: Mapped[str] = mapped_column(String(255), default="")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    command: Mapped[list[str]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    properties: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)


class ImageAliasRow(Base):
    __tablename__ = "image_aliases"
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(127), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"))


class InstanceRow(Base):
    __tablename__ = "instances"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_instance_project_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(63))
    type: Mapped[str] = mapped_column(String(32))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    state: Mapped[str] = mapped_column(String(16))
    limits: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    privileged: Mapped[bool] = mapped_column(Boolean, default=False)
    command: Mapped[list[str]] = mapped_column(JSON, default=list)
    options: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(String(1024), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    # pool, copy, size of the instance's root (None: made before storage pools existed)
    root: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # in a cluster: the member that runs it, and the one it was evacuated from
    location: Mapped[str | None] = mapped_column(String(63), nullable=True)
    origin: Mapped[str | None] = mapped_column(String(63), nullable=True)
    ephemeral: Mapped[bool] = mapped_column(Boolean, default=False)   # stateless
    # its name on the host (runtime, cgroups, files) when a rename left it: None = derived
    host_id: Mapped[str | None] = mapped_column(String(140), nullable=True)


class OperationRow(Base):
    __tablename__ = "operations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    description: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(String(255), default="")
    error: Mapped[str | None] = mapped_column(String(2048), nullable=True)
    error_type: Mapped[str | None] = mapped_column(String(64), nullable=True)
    resources: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    project: Mapped[str] = mapped_column(String(63), default="default", index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class NetworkRow(Base):
    __tablename__ = "networks"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_network_project_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(63))
    subnet: Mapped[str] = mapped_column(String(43))
    gateway: Mapped[str] = mapped_column(String(45))
    bridge: Mapped[str] = mapped_column(String(15), unique=True)
    isolated: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    dns_domain: Mapped[str] = mapped_column(String(253), default="cumulo")
    type: Mapped[str] = mapped_column(String(16), default="bridge")   # or overlay
    vni: Mapped[int | None] = mapped_column(Integer, unique=True, nullable=True)
    mtu: Mapped[int | None] = mapped_column(Integer, nullable=True)
    own_netns: Mapped[bool] = mapped_column(Boolean, default=False)


class TunnelRow(Base):
    """One member's side of an overlay network, as that member last set it up."""
    __tablename__ = "overlay_tunnels"
    __table_args__ = (UniqueConstraint("network_id", "member", name="uq_tunnel_member"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id", ondelete="CASCADE"))
    member: Mapped[str] = mapped_column(String(63))
    state: Mapped[str] = mapped_column(String(255), default="")   # up, or what failed
    device: Mapped[str] = mapped_column(String(15), default="")
    local: Mapped[str] = mapped_column(String(45), default="")
    peers: Mapped[list[str]] = mapped_column(JSON, default=list)  # head-end replication
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class NicRow(Base):
    __tablename__ = "nics"
    __table_args__ = (
        UniqueConstraint("network_id", "ip", name="uq_nic_network_ip"),
        UniqueConstraint("instance_id", "idx", name="uq_nic_instance_idx"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id"))
    idx: Mapped[int] = mapped_column(Integer)
    mac: Mapped[str] = mapped_column(String(17))
    ip: Mapped[str] = mapped_column(String(45))
    host_name: Mapped[str] = mapped_column(String(15), unique=True)
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)       # security groups
    bandwidth: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)  # ingress/egress/burst


class IdentityRow(Base):
    """A caller over TCP: a client with roles in projects (or server-wide admin), or
    another host (kind ``remote``) that may only migrate here. Only the token's sha256
    is kept."""
    __tablename__ = "identities"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class IdentityRoleRow(Base):
    """An identity's role in one project (by name: a project may be made later)."""
    __tablename__ = "identity_roles"
    __table_args__ = (UniqueConstraint("identity_id", "project",
                                       name="uq_identity_role_project"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    identity_id: Mapped[int] = mapped_column(ForeignKey("identities.id", ondelete="CASCADE"))
    project: Mapped[str] = mapped_column(String(63))
    role: Mapped[str] = mapped_column(String(16))


class AuditRow(Base):
    """One mutating request: who, where, what, on what, and the HTTP status it got."""
    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    identity: Mapped[str] = mapped_column(String(63))
    project: Mapped[str | None] = mapped_column(String(63), nullable=True, index=True)
    action: Mapped[str] = mapped_column(String(128))
    object: Mapped[str] = mapped_column(String(255))
    result: Mapped[int] = mapped_column(Integer)


class RemoteRow(Base):
    """Another cumulod this one trusts, and the token it gave us."""
    __tablename__ = "remotes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    url: Mapped[str] = mapped_column(String(255))
    token: Mapped[str] = mapped_column(String(128))
    fingerprint: Mapped[str] = mapped_column(String(64), default="")  # its certificate's sha256
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class SecurityGroupRow(Base):
    __tablename__ = "security_groups"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_sg_project_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(String(255), default="")
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ForwardRow(Base):
    __tablename__ = "forwards"
    __table_args__ = (UniqueConstraint("listen_address", "listen_port", "protocol",
                                       name="uq_forward_listen"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    network_id: Mapped[int] = mapped_column(ForeignKey("networks.id"))
    listen_address: Mapped[str] = mapped_column(String(45))
    listen_port: Mapped[int] = mapped_column(Integer)
    protocol: Mapped[str] = mapped_column(String(8))
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    target_port: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class VolumeRow(Base):
    __tablename__ = "volumes"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_volume_project_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(63))
    pool: Mapped[str] = mapped_column(String(63))
    size: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class VolumeAttachmentRow(Base):
    __tablename__ = "volume_attachments"
    __table_args__ = (
        UniqueConstraint("volume_id", "instance_id", name="uq_attachment_volume_instance"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    volume_id: Mapped[int] = mapped_column(ForeignKey("volumes.id", ondelete="CASCADE"))
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(255))
    shared: Mapped[bool] = mapped_column(Boolean, default=False)


# --- the cluster: members, placement groups, allocations (store/members.py) ---
class MemberRow(Base):
    """One cumulod of the cluster: where it answers, whether it is usable, what it has
    (capacity) and what is declared on it (``used_*``, ``instances``: kept by the
    allocations in the same transaction, so a locked row says what is free). The
    columns up to ``heartbeat`` are the ones h-cluster's membership writes."""
    __tablename__ = "members"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    address: Mapped[str] = mapped_column(String(255), default="")   # HOST:PORT
    state: Mapped[str] = mapped_column(String(16), default="online")
    cpus: Mapped[int] = mapped_column(Integer, default=0)
    memory: Mapped[int] = mapped_column(BigInteger, default=0)
    disk: Mapped[int] = mapped_column(BigInteger, default=0)
    groups: Mapped[list[str]] = mapped_column(JSON, default=list)
    features: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # kvm, arch ...
    heartbeat: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    used_cpus: Mapped[float] = mapped_column(Float, default=0.0)
    used_memory: Mapped[int] = mapped_column(BigInteger, default=0)
    used_disk: Mapped[int] = mapped_column(BigInteger, default=0)
    instances: Mapped[int] = mapped_column(Integer, default=0)
    fingerprint: Mapped[str] = mapped_column(String(64), default="")   # its certificate's


class PlacementGroupRow(Base):
    __tablename__ = "placement_groups"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_pg_project_name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    name: Mapped[str] = mapped_column(String(63))
    policy: Mapped[str] = mapped_column(String(16))
    strict: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class AllocationRow(Base):
    """An instance's declared resources on the member it was placed on."""
    __tablename__ = "allocations"
    __table_args__ = (UniqueConstraint("project_id", "instance", name="uq_alloc_instance"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id"))
    instance: Mapped[str] = mapped_column(String(63))
    member_id: Mapped[int] = mapped_column(ForeignKey("members.id"))
    placement_group_id: Mapped[int | None] = mapped_column(
        ForeignKey("placement_groups.id"), nullable=True)
    cpus: Mapped[float] = mapped_column(Float, default=0.0)
    memory: Mapped[int] = mapped_column(BigInteger, default=0)
    disk: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class JoinTokenRow(Base):
    """A single-use invitation for a new member: only its sha256 is kept."""
    __tablename__ = "join_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    sha256: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, nullable=True)


class ClusterConfigRow(Base):
    """A cluster-wide setting (``rebalance.*``), as text; and the automatic rebalancer's
    last round (``rebalance.last``), which members take in turn by compare-and-set."""
    __tablename__ = "cluster_config"
    key: Mapped[str] = mapped_column(String(63), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))


class TpmBaselineRow(Base):
    """A VM's measured boot as recorded by ``cumulo tpm baseline`` (services/measured_boot.py)."""
    __tablename__ = "tpm_baselines"
    instance_id: Mapped[int] = mapped_column(ForeignKey("instances.id", ondelete="CASCADE"),
                                             primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    pcrs: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)      # index -> sha256
    events: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


# The tables, for Core statements where the ORM costs too much: on an idle CPU its own
# work was ~0.5 ms a statement against SQLite's 0.02-0.15 ms (a launch's and an exec's
# statements in store/repo.py and store/projects.py)
PROJECTS, IMAGES = Base.metadata.tables["projects"], Base.metadata.tables["images"]
ALIASES, INSTANCES = Base.metadata.tables["image_aliases"], Base.metadata.tables["instances"]
NETWORKS, OPERATIONS = Base.metadata.tables["networks"], Base.metadata.tables["operations"]
AUDIT = Base.metadata.tables["audit"]   # (the audit log's writer: store/identities.py)
