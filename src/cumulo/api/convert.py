"""Domain records to wire schemas, and wire input to domain values."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

from cumulo.api import schemas as s
from cumulo.domain.limits import Limits, parse_limit
from cumulo.domain.models import Image, Instance, Network, Operation, Tunnel
from cumulo.domain.units import parse_size
from cumulo.domain.volumes import Volume
from cumulo.drivers.base import Usage
from cumulo.net.base import NicCounters
from cumulo.services.storage import PoolInfo


def limits_in(data: dict[str, Any]) -> dict[str, Any]:
    """Limit values from the wire: sizes may be strings, text values are parsed."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            out[key] = None
        elif key in ("memory", "memory_swap"):
            out[key] = parse_size(value)
        elif isinstance(value, str):
            out[key] = parse_limit(key, value)
        else:
            parse_limit(key, str(value))  # refuses unknown keys with a clear message
            out[key] = value
    return out


def limits_from(model: s.LimitsIn) -> Limits:
    return Limits.from_dict({k: v for k, v in limits_in(model.model_dump()).items()
                             if v is not None})


def instance_out(inst: Instance, pid: int | None = None, usage: Usage | None = None,
                 counters: dict[str, NicCounters] | None = None,
                 details: dict[str, Any] | None = None, unreachable: bool = False
                 ) -> s.InstanceOut:
    """``unreachable``: its member is offline, so its state is not known (not stopped)."""
    counters = counters or {}
    return s.InstanceOut(
        name=inst.name, project=inst.project, type=inst.type, image=inst.image,
        state="unreachable" if unreachable else inst.state.value,
        limits=inst.limits.to_dict(), privileged=inst.privileged,
        command=inst.command, options=inst.options, exit_code=inst.exit_code,
        last_error=inst.last_error,
        created_at=inst.created_at, pid=pid,
        usage=s.Usage(**asdict(usage)) if usage is not None else None,
        nics=[s.NicOut(**asdict(n), counters=s.NicCounters(**asdict(counters[n.host_name]))
                       if n.host_name in counters else None) for n in inst.nics],
        root=inst.root, details=details, location=inst.location, ephemeral=inst.ephemeral,
    )


def network_out(net: Network, used_by: list[str] | None = None,
                tunnels: list[Tunnel] | None = None) -> s.NetworkOut:
    return s.NetworkOut(**asdict(net), used_by=used_by or [], nat=not net.isolated,
                        tunnels=[s.TunnelOut(**asdict(t)) for t in tunnels or []])


def image_out(img: Image) -> s.ImageOut:
    return s.ImageOut(**asdict(img))


def location(op: Operation) -> str:
    """Where the operation is read (its project's, outside ``default``)."""
    where = "" if op.project == "default" else f"?project={op.project}"
    return f"/1.0/operations/{op.id}{where}"


def operation_out(op: Operation) -> s.OperationOut:
    """(Its fields as they are: ``asdict`` deep-copies them, ~1 ms on the event loop for
    each launch's answer.)"""
    d = {f.name: getattr(op, f.name) for f in fields(op)}
    d["status"] = op.status.value
    return s.OperationOut(**d)


def volume_out(vol: Volume, used: int | None = None) -> s.VolumeOut:
    return s.VolumeOut(name=vol.name, project=vol.project, pool=vol.pool, size=vol.size,
                       used=used, created_at=vol.created_at,
                       attachments=[s.AttachmentOut(**asdict(a)) for a in vol.attachments])


def pool_out(p: PoolInfo) -> s.PoolOut:
    return s.PoolOut(name=p.name, driver=p.driver, path=str(p.path), used=p.used, free=p.free,
                     total=p.total, roots=p.roots, volumes=p.volumes)
