"""Project settings as Incus names them, and the pure checks made with them: quotas
(``limits.*``) against a project's usage, defaults (``default.*``) for what an instance
does not declare, restrictions (``restricted.*``) and features (``features.images``).

The store counts usage and calls ``check_quota`` inside the transaction that inserts,
holding the project's row lock, so that racing requests cannot overshoot.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from cumulo.domain.units import format_size, parse_size
from cumulo.errors import InvalidInputError, QuotaExceededError, RestrictedError

DEFAULT = "default"

# quota key -> kind of value: "count", "cpu" (CPUs, fractions allowed) or "size" (bytes)
LIMITS: dict[str, str] = {
    "limits.instances": "count",
    "limits.containers": "count",
    "limits.virtual-machines": "count",
    "limits.cpu": "cpu",
    "limits.memory": "size",
    "limits.disk": "size",          # instance roots and volumes, declared sizes
    "limits.networks": "count",
}
DEFAULTS: dict[str, str] = {"default.cpu": "cpu", "default.memory": "size",
                            "default.disk": "size"}
CHOICES: dict[str, tuple[str, ...]] = {
    "features.images": ("true", "false"),
    "restricted.containers.privilege": ("unprivileged", "allow"),
    "restricted.virtual-machines.lowlevel": ("block", "allow"),
    "restricted.migration": ("block", "allow"),
    # managed: no host directory bound into a container (only Cumulo volumes)
    "restricted.devices.disk": ("managed", "allow"),
}
# comma lists: remotes migrations may go to, host directories (and what is below them) a
# container may bind (unset: any)
LISTS = ("restricted.migration.targets", "restricted.devices.disk.paths")
# what a project made with `project create` starts with (``default`` has none of them)
NEW_PROJECT = {"restricted.containers.privilege": "unprivileged", "features.images": "false"}
# VM options that reach QEMU's low level (restricted.virtual-machines.lowlevel=block)
LOWLEVEL_OPTIONS = ("accel", "machine", "io")
VM_TYPES = ("vm", "appvm")


@dataclass
class Usage:
    """What a project holds, counted the way its quotas count."""

    instances: int = 0
    containers: int = 0
    virtual_machines: int = 0
    cpu: float = 0.0
    memory: int = 0
    disk: int = 0
    networks: int = 0
    volumes: int = 0
    security_groups: int = 0
    images: int = 0

    def of(self, key: str) -> float:
        return float(getattr(self, key.removeprefix("limits.").replace("-", "_")))


@dataclass(frozen=True)
class Need:
    """What one new object adds to its project's usage."""

    instances: int = 0
    containers: int = 0
    virtual_machines: int = 0
    cpu: float = 0.0
    memory: int = 0
    disk: int = 0
    networks: int = 0
    declared: dict[str, bool] = field(default_factory=dict)   # cpu/memory/disk declared?

    def of(self, key: str) -> float:
        return float(getattr(self, key.removeprefix("limits.").replace("-", "_")))


def instance_need(type_: str, cpu: float | None, memory: int | None, disk: int | None) -> Need:
    vm = type_ in VM_TYPES
    return Need(instances=1, containers=0 if vm else 1, virtual_machines=1 if vm else 0,
                cpu=cpu or 0.0, memory=memory or 0, disk=disk or 0,
                declared={"cpu": cpu is not None, "memory": memory is not None,
                          "disk": disk is not None})


def validate_name(name: str) -> str:
    from cumulo.domain.units import validate_name as valid

    return valid(name, "project")


def validate_setting(key: str, value: str) -> str:
    """The value as stored (sizes in bytes); an unknown key or bad value is refused."""
    kind = LIMITS.get(key) or DEFAULTS.get(key)
    if kind is not None:
        return _number(key, value, kind)
    if key in CHOICES:
        if value not in CHOICES[key]:
            raise InvalidInputError(f"invalid {key} {value!r}: use {' or '.join(CHOICES[key])}")
        return value
    if key in LISTS:
        return ",".join(x.strip() for x in value.split(",") if x.strip())
    known = sorted([*LIMITS, *DEFAULTS, *CHOICES, *LISTS])
    raise InvalidInputError(f"unknown project setting {key!r} (known: {', '.join(known)})")


def _number(key: str, value: str, kind: str) -> str:
    try:
        if kind == "size":
            return str(parse_size(value))
        number = float(value) if kind == "cpu" else int(value)
    except ValueError:
        raise InvalidInputError(f"invalid {key} {value!r}: give a number") from None
    if number < 0 or (kind == "cpu" and key.startswith("default.") and number == 0):
        raise InvalidInputError(f"invalid {key} {value!r}: must not be negative")
    return str(number)


def show(key: str, value: str | float) -> str:
    """A setting or usage as a user reads it: sizes in MiB/GiB."""
    kind = LIMITS.get(key) or DEFAULTS.get(key)
    if kind == "size":
        return format_size(int(float(value)))
    if kind == "cpu":
        number = float(value)
        return str(int(number)) if number == int(number) else f"{number:g}"
    if kind == "count" or key in ("limits.volumes", "limits.security-groups", "limits.images"):
        return str(int(float(value)))
    return str(value)


def check_quota(project: str, config: Mapping[str, str], usage: Usage, need: Need) -> None:
    """Refuse ``need`` if it would take ``project`` past one of its limits: one line that
    names the limit, its value and the usage. CPU, memory and disk quotas count declared
    values, so a new instance must declare what a quota counts."""
    for key in LIMITS:
        if key not in config:
            continue
        what = key.removeprefix("limits.")
        if not need.declared.get(what, True):
            raise QuotaExceededError(
                f"project {project!r} has {key}={show(key, config[key])}: instances in it must"
                f" declare {what} (or the project a default: `cumulo project set {project}"
                f" default.{what} VALUE`)")
        limit, used, more = float(config[key]), usage.of(key), need.of(key)
        if more and used + more > limit:
            raise QuotaExceededError(
                f"project {project!r} is over quota: {key}={show(key, config[key])}, in use"
                f" {show(key, used)}, this needs {show(key, more)} more")


def check_instance(project: str, config: Mapping[str, str], type_: str, privileged: bool,
                   options: Mapping[str, str]) -> None:
    """The project's restrictions on a new instance."""
    if privileged and type_ == "container" and config.get(
            "restricted.containers.privilege") == "unprivileged":
        raise RestrictedError(
            f"project {project!r} does not allow privileged containers"
            " (restricted.containers.privilege=unprivileged)")
    low = sorted(k for k in options if k in LOWLEVEL_OPTIONS)
    if low and type_ in VM_TYPES and config.get(
            "restricted.virtual-machines.lowlevel") == "block":
        raise RestrictedError(
            f"project {project!r} does not allow low-level VM options ({', '.join(low)}):"
            " restricted.virtual-machines.lowlevel=block")


def check_binds(project: str, config: Mapping[str, str], paths: list[str]) -> None:
    """The project's restrictions on host directories bound into a container (``paths``:
    absolute, symlinks resolved)."""
    if not paths:
        return
    if config.get("restricted.devices.disk") == "managed":
        raise RestrictedError(f"project {project!r} does not allow host directories in"
                              " containers (restricted.devices.disk=managed)")
    allowed = config.get("restricted.devices.disk.paths")
    if allowed is None:
        return
    tops = [a.rstrip("/") or "/" for a in allowed.split(",") if a]
    for path in paths:
        if not any(path == t or path.startswith(t.rstrip("/") + "/") for t in tops):
            raise RestrictedError(
                f"project {project!r} allows host directories only under"
                f" {', '.join(tops) or 'nowhere'} (restricted.devices.disk.paths), not"
                f" {path}")


def check_migration(project: str, config: Mapping[str, str], remote: str) -> None:
    """The project's restrictions on where its instances may migrate."""
    if config.get("restricted.migration") == "block":
        raise RestrictedError(f"project {project!r} does not allow migration"
                              " (restricted.migration=block)")
    targets = config.get("restricted.migration.targets")
    if targets is not None and remote not in targets.split(","):
        raise RestrictedError(
            f"project {project!r} may migrate only to {targets or 'no remote'}"
            f" (restricted.migration.targets), not to {remote!r}")


def apply_defaults(config: Mapping[str, str], cpu: float | None, memory: int | None,
                   disk: int | None) -> tuple[float | None, int | None, int | None]:
    """An instance's cpu, memory and root disk, the project's defaults filling the gaps."""
    if cpu is None and "default.cpu" in config:
        cpu = float(config["default.cpu"])
    if memory is None and "default.memory" in config:
        memory = int(config["default.memory"])
    if disk is None and "default.disk" in config:
        disk = int(config["default.disk"])
    return cpu, memory, disk


def private_images(project: str, config: Mapping[str, str]) -> bool:
    """Whether the project keeps images of its own (else it uses default's)."""
    return project != DEFAULT and config.get("features.images") == "true"
