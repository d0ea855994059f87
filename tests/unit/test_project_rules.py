"""The pure project rules: settings, quotas, restrictions, defaults (domain/projects.py)."""

from __future__ import annotations

import pytest

from cumulo.domain import projects as rules
from cumulo.errors import InvalidInputError, QuotaExceededError, RestrictedError


def test_settings_are_checked_and_sizes_kept_in_bytes() -> None:
    assert rules.validate_setting("limits.memory", "1GiB") == str(1 << 30)
    assert rules.validate_setting("limits.cpu", "1.5") == "1.5"
    assert rules.validate_setting("restricted.migration.targets", " a, b ,") == "a,b"
    with pytest.raises(InvalidInputError, match="invalid limits.instances 'x': give a number"):
        rules.validate_setting("limits.instances", "x")
    with pytest.raises(InvalidInputError, match="must not be negative"):
        rules.validate_setting("limits.instances", "-1")
    with pytest.raises(InvalidInputError, match="use unprivileged or allow"):
        rules.validate_setting("restricted.containers.privilege", "maybe")
    with pytest.raises(InvalidInputError, match="unknown project setting"):
        rules.validate_setting("limits.gpus", "1")


def test_quota_counts_declared_values() -> None:
    config = {"limits.cpu": "2", "limits.containers": "1"}
    used = rules.Usage(instances=1, containers=0, virtual_machines=1, cpu=1.5)
    rules.check_quota("p", config, used, rules.instance_need("container", 0.5, None, None))
    with pytest.raises(QuotaExceededError, match="must declare cpu"):
        rules.check_quota("p", config, used, rules.instance_need("vm", None, None, None))
    with pytest.raises(QuotaExceededError,
                       match=r"^project 'p' is over quota: limits.cpu=2, in use 1.5, this"
                             r" needs 1 more$"):
        rules.check_quota("p", config, used, rules.instance_need("vm", 1, None, None))
    used.containers = 1
    with pytest.raises(QuotaExceededError, match="limits.containers=1, in use 1"):
        rules.check_quota("p", config, used, rules.instance_need("container", 0.1, None, None))


def test_restrictions() -> None:
    new = dict(rules.NEW_PROJECT)
    rules.check_instance("p", new, "vm", True, {})      # a VM's privilege is not a host's
    with pytest.raises(RestrictedError, match="privileged containers"):
        rules.check_instance("p", new, "container", True, {})
    low = {"restricted.virtual-machines.lowlevel": "block"}
    rules.check_instance("p", low, "vm", False, {"tpm": "on"})
    with pytest.raises(RestrictedError, match=r"low-level VM options \(accel, machine\)"):
        rules.check_instance("p", low, "vm", False, {"accel": "tcg", "machine": "pc"})
    rules.check_migration("p", {}, "anywhere")
    with pytest.raises(RestrictedError, match="does not allow migration"):
        rules.check_migration("p", {"restricted.migration": "block"}, "r")
    only = {"restricted.migration.targets": "east,west"}
    rules.check_migration("p", only, "west")
    with pytest.raises(RestrictedError, match="only to east,west .* not to 'north'"):
        rules.check_migration("p", only, "north")


def test_defaults_fill_only_gaps() -> None:
    config = {"default.cpu": "1", "default.memory": str(256 << 20)}
    assert rules.apply_defaults(config, None, None, None) == (1.0, 256 << 20, None)
    assert rules.apply_defaults(config, 0.5, 1 << 20, 5) == (0.5, 1 << 20, 5)


def test_host_directories_restrictions() -> None:
    rules.check_binds("p", {"restricted.devices.disk": "managed"}, [])   # none: no question
    with pytest.raises(RestrictedError, match="restricted.devices.disk=managed"):
        rules.check_binds("p", {"restricted.devices.disk": "managed"}, ["/srv"])
    allowed = {"restricted.devices.disk.paths": "/srv,/data/"}
    rules.check_binds("p", allowed, ["/srv", "/srv/a", "/data", "/data/b"])
    for path in ("/srvx", "/", "/dat"):   # a prefix counts at a path's "/" only
        with pytest.raises(RestrictedError, match="only under /srv, /data"):
            rules.check_binds("p", allowed, [path])
    with pytest.raises(RestrictedError, match="nowhere"):
        rules.check_binds("p", {"restricted.devices.disk.paths": ""}, ["/srv"])
    rules.check_binds("p", {}, ["/anything"])
