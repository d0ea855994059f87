"""Cumulo instances in Docker's container shapes (ps rows, inspect) and back (create)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cumulo.docker.common import DockerError, bad
from cumulo.docker.images import iso
from cumulo.domain.lifecycle import State
from cumulo.domain.limits import Limits
from cumulo.domain.models import Instance
from cumulo.drivers.container.oci_spec import MASKED_PATHS, READONLY_PATHS

NANO = 1_000_000_000
VM_RUNTIME = "cumulo-vm"     # docker run --runtime cumulo-vm (or --isolation vm)
VM_TYPE = "imagevm"          # the Cumulo instance type it makes

HOST_CONFIG_DEFAULTS: dict[str, Any] = {
    "Binds": None, "ContainerIDFile": "", "LogConfig": {"Type": "json-file", "Config": {}},
    "NetworkMode": "bridge", "PortBindings": {}, "RestartPolicy": {"Name": "no",
                                                                    "MaximumRetryCount": 0},
    "AutoRemove": False, "VolumeDriver": "", "VolumesFrom": None, "ConsoleSize": [0, 0],
    "CapAdd": None, "CapDrop": None, "CgroupnsMode": "private", "Dns": [], "DnsOptions": [],
    "DnsSearch": [], "ExtraHosts": None, "GroupAdd": None, "IpcMode": "private", "Cgroup": "",
    "Links": None, "OomScoreAdj": 0, "PidMode": "", "Privileged": False,
    "PublishAllPorts": False, "ReadonlyRootfs": False, "SecurityOpt": None, "UTSMode": "",
    "UsernsMode": "", "ShmSize": 67108864, "Runtime": "runc", "Isolation": "",
    "CpuShares": 0, "Memory": 0, "NanoCpus": 0, "CgroupParent": "", "BlkioWeight": 0,
    "BlkioWeightDevice": [], "BlkioDeviceReadBps": [], "BlkioDeviceWriteBps": [],
    "BlkioDeviceReadIOps": [], "BlkioDeviceWriteIOps": [], "CpuPeriod": 0, "CpuQuota": 0,
    "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0, "CpusetCpus": "", "CpusetMems": "",
    "Devices": [], "DeviceCgroupRules": None, "DeviceRequests": None,
    "MemoryReservation": 0, "MemorySwap": 0, "MemorySwappiness": None,
    "OomKillDisable": False, "PidsLimit": None, "Ulimits": None, "CpuCount": 0,
    "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
    "MaskedPaths": list(MASKED_PATHS), "ReadonlyPaths": list(READONLY_PATHS),
}


def weight_from_shares(shares: int) -> int:
    """cgroup v1 shares (2..262144) to Cumulo's weight (1..10000), runc's formula reversed."""
    return max(1, min(10000, 1 + ((shares - 2) * 9999) // 262142))


def limits_from(hc: dict[str, Any]) -> Limits:
    """Docker's HostConfig limits as Cumulo limits (validated by the service)."""
    cpu: float | None = None
    if hc.get("NanoCpus"):
        cpu = int(hc["NanoCpus"]) / NANO
    elif hc.get("CpuQuota") and int(hc["CpuQuota"]) > 0:
        cpu = int(hc["CpuQuota"]) / int(hc.get("CpuPeriod") or 100_000)
    memory = int(hc.get("Memory") or 0) or None
    swap = int(hc.get("MemorySwap") or 0)
    if memory is not None and memory < 6 * 1024 * 1024:
        raise bad("Minimum memory limit allowed is 6MB")
    pids = int(hc.get("PidsLimit") or 0)
    shares = int(hc.get("CpuShares") or 0)
    return Limits(cpu=cpu, cpu_weight=weight_from_shares(shares) if shares else None,
                  cpuset=hc.get("CpusetCpus") or None, memory=memory,
                  memory_swap=swap if memory and swap > 0 else None,
                  pids=pids if pids > 0 else None,
                  io_weight=int(hc["BlkioWeight"]) if hc.get("BlkioWeight") else None)


def host_config(inst: Instance, saved: dict[str, Any]) -> dict[str, Any]:
    """HostConfig as given at create, Docker's defaults filled in, limits as they are now."""
    hc = dict(HOST_CONFIG_DEFAULTS)
    for key, value in saved.items():   # a zero value means "the default", as in Docker
        default = HOST_CONFIG_DEFAULTS.get(key)
        if value in (None, "", 0, [], {}) and default:
            continue
        if isinstance(value, dict) and isinstance(default, dict):
            value = {**default, **{k: v for k, v in value.items() if v or not default.get(k)}}
        hc[key] = value
    lim = inst.limits
    hc["Memory"] = lim.memory or 0
    hc["MemorySwap"] = lim.memory_swap or (2 * lim.memory if lim.memory else 0)
    hc["NanoCpus"] = round(lim.cpu * NANO) if lim.cpu and not saved.get("CpuQuota") else 0
    hc["PidsLimit"] = lim.pids
    hc["CpusetCpus"] = lim.cpuset or ""
    hc["Privileged"] = inst.privileged
    hc["Runtime"] = VM_RUNTIME if inst.type == VM_TYPE else "runc"
    return hc


def docker_state(inst: Instance, meta: dict[str, Any]) -> str:
    if inst.state == State.RUNNING:
        return "running"
    if inst.state == State.PAUSED:
        return "paused"
    if inst.state in (State.CREATING,):
        return "created"
    if inst.state == State.STOPPED:
        return "exited" if meta.get("StartedAt") or inst.exit_code is not None else "created"
    return "dead"


def _ago(seconds: float) -> str:
    s = int(max(seconds, 0))
    if s < 1:
        return "Less than a second"
    if s < 60:
        return f"{s} seconds"
    if s < 3600:
        return f"{s // 60} minutes" if s >= 120 else "About a minute"
    if s < 86400:
        return f"{s // 3600} hours" if s >= 7200 else "About an hour"
    return f"{s // 86400} days"


def _ts(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def status_text(inst: Instance, meta: dict[str, Any]) -> str:
    state = docker_state(inst, meta)
    now = time.time()
    if state in ("running", "paused"):
        up = _ago(now - (_ts(meta.get("StartedAt")) or now))
        return f"Up {up}" + (" (Paused)" if state == "paused" else "")
    if state == "exited":
        ago = _ago(now - (_ts(meta.get("FinishedAt")) or now))
        return f"Exited ({inst.exit_code or 0}) {ago} ago"
    return "Created"


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def command_of(inst: Instance) -> str:
    return " ".join(inst.command)


def networks_of(inst: Instance, gateways: dict[str, str]) -> dict[str, Any]:
    nets = {}
    for nic in inst.nics:
        nets["bridge" if nic.network == "default" else nic.network] = {   # Docker's name
            "IPAMConfig": None, "Links": None, "Aliases": [inst.name], "MacAddress": nic.mac,
            "NetworkID": nic.network, "EndpointID": nic.host_name,
            "Gateway": gateways.get(nic.network, ""), "IPAddress": nic.ip.split("/")[0],
            "IPPrefixLen": int(nic.ip.split("/")[1]) if "/" in nic.ip else 24,
            "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "DriverOpts": None, "DNSNames": [inst.name]}
    return nets


def ports_of(saved: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key, binds in (saved.get("PortBindings") or {}).items():
        port, _, proto = key.partition("/")
        for b in binds or []:
            out.append({"IP": b.get("HostIp") or "0.0.0.0", "PrivatePort": int(port),
                        "PublicPort": int(b.get("HostPort") or 0), "Type": proto or "tcp"})
    return out


def summary(inst: Instance, meta: dict[str, Any], gateways: dict[str, str],
            mounts: list[dict[str, Any]]) -> dict[str, Any]:
    config = meta.get("Config") or {}
    return {
        "Id": meta["Id"], "Names": [f"/{inst.name}"],
        "Image": config.get("Image") or inst.image[:12], "ImageID": f"sha256:{inst.image}",
        "Command": command_of(inst), "Created": int(created(inst)),
        "Ports": ports_of(meta.get("HostConfig") or {}), "Labels": config.get("Labels") or {},
        "State": docker_state(inst, meta), "Status": status_text(inst, meta),
        "HostConfig": {"NetworkMode": (meta.get("HostConfig") or {}).get("NetworkMode")
                       or "bridge"},
        "NetworkSettings": {"Networks": networks_of(inst, gateways)},
        "Mounts": mounts}


def created(inst: Instance) -> float:
    if inst.created_at is None:
        return 0.0
    dt = inst.created_at if inst.created_at.tzinfo else inst.created_at.replace(tzinfo=UTC)
    return dt.timestamp()


def inspect(inst: Instance, meta: dict[str, Any], pid: int | None, gateways: dict[str, str],
            mounts: list[dict[str, Any]], log_path: str = "") -> dict[str, Any]:
    state = docker_state(inst, meta)
    config = {"Hostname": inst.name, "Domainname": "", "User": "", "AttachStdin": False,
              "AttachStdout": True, "AttachStderr": True, "ExposedPorts": None, "Tty": False,
              "OpenStdin": False, "StdinOnce": False, "Env": [], "Cmd": list(inst.command),
              "Image": inst.image, "Volumes": None, "WorkingDir": "", "Entrypoint": None,
              "OnBuild": None, "Labels": {}, **(meta.get("Config") or {})}
    saved_hc = meta.get("HostConfig") or {}
    return {
        "Id": meta["Id"], "Created": iso(inst.created_at),
        "Path": inst.command[0] if inst.command else "", "Args": inst.command[1:],
        "State": {"Status": state, "Running": state in ("running", "paused"),
                  "Paused": state == "paused", "Restarting": False,
                  "OOMKilled": False, "Dead": state == "dead", "Pid": pid or 0,
                  "ExitCode": inst.exit_code or 0, "Error": inst.last_error or "",
                  "StartedAt": meta.get("StartedAt") or "0001-01-01T00:00:00Z",
                  "FinishedAt": meta.get("FinishedAt") or "0001-01-01T00:00:00Z"},
        "Image": f"sha256:{inst.image}", "ResolvConfPath": "", "HostnamePath": "",
        "HostsPath": "", "LogPath": log_path, "Name": f"/{inst.name}",
        "RestartCount": int(meta.get("RestartCount") or 0), "Driver": "cumulo",
        "Platform": "linux", "MountLabel": "", "ProcessLabel": "", "AppArmorProfile": "",
        "ExecIDs": None, "HostConfig": host_config(inst, saved_hc),
        "GraphDriver": {"Name": "cumulo", "Data": {}}, "Mounts": mounts, "Config": config,
        "NetworkSettings": {
            "Bridge": "", "SandboxID": "", "SandboxKey": "", "HairpinMode": False,
            "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0,
            "Ports": {k: v for k, v in (saved_hc.get("PortBindings") or {}).items()},
            "SecondaryIPAddresses": None, "SecondaryIPv6Addresses": None, "EndpointID": "",
            "Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0,
            "IPAddress": inst.nics[0].ip.split("/")[0] if inst.nics else "",
            "IPPrefixLen": 24 if inst.nics else 0, "IPv6Gateway": "", "MacAddress":
            inst.nics[0].mac if inst.nics else "",
            "Networks": networks_of(inst, gateways)},
        "Cumulo": {"Project": inst.project, "Type": inst.type, "State": inst.state.value},
    }


def resolve_user(rootfs: Path, user: str) -> tuple[int, int]:
    """``uid[:gid]`` or ``name[:group]`` (from the image's passwd and group files)."""
    if not user:
        return 0, 0
    name, _, group = user.partition(":")

    def lookup(path: str, key: str, field: int) -> int:
        if key.isdigit():
            return int(key)
        try:
            for line in (rootfs / path).read_text(errors="replace").splitlines():
                parts = line.split(":")
                if len(parts) > field and parts[0] == key:
                    return int(parts[field])
        except (OSError, ValueError):
            pass
        raise DockerError(400, f"unable to find user {key}: no matching entries in "
                               f"{path.rsplit('/', 1)[-1]} file")

    uid = lookup("etc/passwd", name, 2)
    if group:
        return uid, lookup("etc/group", group, 2)
    if name.isdigit():
        return uid, uid if not (rootfs / "etc/passwd").exists() else _gid_of(rootfs, uid)
    return uid, lookup("etc/passwd", name, 3)


def _gid_of(rootfs: Path, uid: int) -> int:
    try:
        for line in (rootfs / "etc/passwd").read_text(errors="replace").splitlines():
            parts = line.split(":")
            if len(parts) > 3 and parts[2] == str(uid):
                return int(parts[3])
    except (OSError, ValueError):
        pass
    return 0
