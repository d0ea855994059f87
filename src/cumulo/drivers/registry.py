"""Maps instance kinds to driver factories; the only place that branches on kind."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cumulo.drivers.base import InstanceDriver
from cumulo.errors import InvalidInputError
from cumulo.host.info import HostInfo


@dataclass(frozen=True)
class DriverContext:
    """What every driver gets from the daemon."""

    state_dir: Path           # persistent: <state>/<kind>/... belongs to the driver
    runtime_dir: Path         # volatile (tmpfs-like): sockets, pid files
    cgroup_parent: str        # e.g. "cumulo": instances go below /sys/fs/cgroup/.../<parent>/
    host: HostInfo
    oci_runtime: str | None = None   # "runc" or "crun"; None = pick from the host probe


DriverFactory = Callable[[DriverContext], InstanceDriver]


def _container(ctx: DriverContext) -> InstanceDriver:
    from cumulo.drivers.container.driver import ContainerDriver

    return ContainerDriver(ctx)


def _fake(ctx: DriverContext) -> InstanceDriver:
    from cumulo.drivers.fake import FakeDriver

    return FakeDriver(ctx)


def _vm(ctx: DriverContext) -> InstanceDriver:
    from cumulo.drivers.vm.driver import VmDriver

    return VmDriver(ctx)


def _appvm(ctx: DriverContext) -> InstanceDriver:
    from cumulo.drivers.vm.appvm import AppVmDriver

    return AppVmDriver(ctx)


def _imagevm(ctx: DriverContext) -> InstanceDriver:
    from cumulo.drivers.vm.imagevm import ImageVmDriver

    return ImageVmDriver(ctx)


FACTORIES: dict[str, DriverFactory] = {"container": _container, "fake": _fake, "vm": _vm,
                                       "appvm": _appvm, "imagevm": _imagevm}


def create_driver(kind: str, ctx: DriverContext) -> InstanceDriver:
    try:
        factory = FACTORIES[kind]
    except KeyError:
        raise InvalidInputError(
            f"unknown instance type {kind!r}: use one of {', '.join(sorted(FACTORIES))}"
        ) from None
    return factory(ctx)
