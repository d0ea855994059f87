"""The OCI config we generate: isolation defaults and limit translation (no root needed)."""

from __future__ import annotations

from pathlib import Path

from cumulo.domain.limits import Limits
from cumulo.drivers.base import InstanceSpec
from cumulo.drivers.container.oci_spec import (
    IDMAP_BASE,
    build_config,
    cpu_shares,
    resources,
    set_criu_conf,
    update_resources,
)
from cumulo.drivers.container.seccomp import DENIED_SYSCALLS


def spec(**kw: object) -> InstanceSpec:
    base: dict[str, object] = {
        "host_id": "default_web", "hostname": "web", "instance_dir": Path("/x/i"),
        "rootfs": Path("/x/r"), "command": ["sh", "-c", "sleep 1"],
    }
    base.update(kw)
    return InstanceSpec(**base)  # type: ignore[arg-type]


def ns_types(config: dict[str, object]) -> set[str]:
    linux = config["linux"]
    assert isinstance(linux, dict)
    return {n["type"] for n in linux["namespaces"]}


def test_unprivileged_gets_user_namespace_and_shared_map() -> None:
    config = build_config(spec(), "/cumulo/default_web")
    assert ns_types(config) == {"pid", "mount", "uts", "ipc", "network", "cgroup", "user"}
    for key in ("uidMappings", "gidMappings"):
        assert config["linux"][key] == [{"containerID": 0, "hostID": IDMAP_BASE, "size": 65536}]
    assert config["linux"]["cgroupsPath"] == "/cumulo/default_web"


def test_privileged_has_no_user_namespace() -> None:
    config = build_config(spec(privileged=True), "/c/x")
    assert "user" not in ns_types(config)
    assert "uidMappings" not in config["linux"]


def test_process_hostname_env_and_caps() -> None:
    config = build_config(spec(env={"FOO": "bar"}), "/c/x")
    process = config["process"]
    assert config["hostname"] == "web"
    assert process["args"] == ["sh", "-c", "sleep 1"]
    assert "HOSTNAME=web" in process["env"] and "FOO=bar" in process["env"]
    assert any(e.startswith("PATH=/usr/local/sbin:") for e in process["env"])
    assert process["noNewPrivileges"] is True
    caps = process["capabilities"]
    assert "CAP_SYS_ADMIN" not in caps["bounding"]
    assert "CAP_NET_BIND_SERVICE" in caps["effective"] and len(caps["permitted"]) == 14
    assert "ambient" not in caps and "inheritable" not in caps


def test_masked_readonly_and_mounts() -> None:
    config = build_config(spec(), "/c/x")
    assert "/proc/kcore" in config["linux"]["maskedPaths"]
    assert "/proc/sysrq-trigger" in config["linux"]["readonlyPaths"]
    mounts = {m["destination"]: m for m in config["mounts"]}
    assert {"/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
            "/sys/fs/cgroup"} <= set(mounts)
    assert "ro" in mounts["/sys"]["options"]
    assert "newinstance" in mounts["/dev/pts"]["options"]


def test_seccomp_is_a_denylist() -> None:
    seccomp = build_config(spec(), "/c/x")["linux"]["seccomp"]
    assert seccomp["defaultAction"] == "SCMP_ACT_ALLOW"
    denied = {n for rule in seccomp["syscalls"] for n in rule["names"]}
    assert {"kexec_load", "bpf", "ptrace", "mount", "init_module"} <= denied
    assert "personality" not in denied and set(DENIED_SYSCALLS) == denied
    assert "SCMP_ARCH_X86_64" in seccomp["architectures"]


def test_limits_translate_to_resources() -> None:
    limits = Limits(cpu=0.5, cpu_weight=100, cpuset="0-1", memory=64 << 20, pids=20,
                    io_weight=500)
    res = resources(limits)
    assert res["cpu"] == {"quota": 50000, "period": 100000, "shares": cpu_shares(100),
                          "cpus": "0-1"}
    assert res["memory"] == {"limit": 64 << 20, "swap": 64 << 20}  # no extra swap
    assert res["pids"] == {"limit": 20}
    assert res["blockIO"] == {"weight": 500}
    swap = resources(Limits(memory=64 << 20, memory_swap=128 << 20))["memory"]["swap"]
    assert swap == 128 << 20
    assert resources(Limits()) == {}


def test_cpu_weight_to_shares_matches_runtimes() -> None:
    assert cpu_shares(1) == 2
    assert cpu_shares(10000) == 262144
    assert cpu_shares(100) == 2 + (99 * 262142) // 9999


def test_config_keeps_device_denial_with_limits() -> None:
    config = build_config(spec(limits=Limits(memory=32 << 20)), "/c/x")
    res = config["linux"]["resources"]
    assert res["devices"] == [{"allow": False, "access": "rwm"}]
    assert res["memory"]["limit"] == 32 << 20


def test_update_resets_limits_left_out() -> None:
    res = update_resources(Limits(memory=64 << 20), host_cpus=2)
    assert res["memory"] == {"limit": 64 << 20, "swap": 64 << 20}
    assert res["cpu"] == {"quota": -1, "period": 100000, "shares": 1024, "cpus": "0-1"}
    assert res["pids"] == {"limit": -1}


def test_network_namespace_is_joined_when_given() -> None:
    alone = build_config(spec(), "/c/x")["linux"]["namespaces"]
    assert {"type": "network"} in alone
    joined = build_config(spec(netns_path=Path("/run/cumulo/netns/default_web")), "/c/x")
    assert {"type": "network", "path": "/run/cumulo/netns/default_web"} in \
        joined["linux"]["namespaces"]



def test_runc_is_told_where_cumulos_criu_options_are() -> None:
    """The annotation runc reads CRIU options from (the network lock): set at create, and
    added to a config written before it existed (so a restart fixes an old container)."""
    conf = Path("/state/container/criu.conf")
    config = build_config(spec(), "/c/x", criu_conf=conf)
    assert config["annotations"] == {"org.criu.config": str(conf)}
    assert not set_criu_conf(config, conf)
    old = build_config(spec(), "/c/x")
    assert "annotations" not in old
    assert set_criu_conf(old, conf) and old["annotations"]["org.criu.config"] == str(conf)
