"""The host probe's result: stable keys, documented in docs/host-info.md."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class HostInfo:
    kernel: str = ""                         # uname -r
    arch: str = ""                           # uname -m
    cpus: int = 1                            # CPUs this process may use
    memory_bytes: int = 0                    # MemTotal
    cgroup_version: int = 0                  # 1 (v1 or hybrid), 2 (unified only), 0 none
    cgroup_controllers: list[str] = field(default_factory=list)   # usable for limits
    cgroup_io_weight: bool = False           # a writable io/blkio weight file exists
    userns: bool = False                     # unprivileged-root containers possible
    kvm: str = "none"                        # "vmx", "svm", "pvm" or "none"
    kvm_usable: bool = False                 # a stock guest can run under KVM
    oci_runtimes: dict[str, str] = field(default_factory=dict)    # name -> version
    oci_runtime_default: str | None = None   # the one we pick here
    conmon: str | None = None                # version
    qemu: str | None = None                  # qemu-system-x86_64 version
    criu: str | None = None                  # version
    criu_check: bool = False                 # `criu check` passes
    criu_network_lock: str | None = None     # "nftables", "iptables" or None (cannot dump)
    swtpm: str | None = None
    nftables: str | None = None
    notes: list[str] = field(default_factory=list)   # why something is unusable

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
