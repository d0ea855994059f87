"""System containers without root: the image side (init found, units masked, DHCP
written, properties) and the config.json a booting init gets."""

from __future__ import annotations

import signal
from pathlib import Path

from cumulo.drivers.base import InstanceSpec
from cumulo.drivers.container import system
from cumulo.drivers.container.oci_spec import build_config, mounts
from cumulo.images import system as system_image


def _tree(top: Path, init_target: str | None) -> Path:
    (top / "sbin").mkdir(parents=True)
    (top / "lib/systemd").mkdir(parents=True)
    (top / "lib/systemd/systemd").write_text("")
    (top / "lib/systemd/systemd-networkd").write_text("")
    (top / "bin").mkdir()
    (top / "bin/busybox").write_text("")
    if init_target is not None:
        (top / "sbin/init").symlink_to(init_target)
    return top


def test_a_tree_with_systemd_becomes_a_system_image(tmp_path: Path) -> None:
    root = _tree(tmp_path, "/lib/systemd/systemd")
    props = system_image.prepare(root)
    assert props == {"instance": "system", "init": "/sbin/init", "stop_signal": "SIGRTMIN+3"}
    assert (root / "etc/systemd/system/systemd-udevd.service").readlink() == Path("/dev/null")
    assert "DHCP=yes" in (root / system_image.NETWORK_FILE).read_text()
    wants = root / "etc/systemd/system/multi-user.target.wants/systemd-networkd.service"
    assert wants.is_symlink()
    assert system_image.boot_options(props) == {"init": "/sbin/init",
                                                 "stop_signal": "SIGRTMIN+3"}


def test_a_tree_without_init_stays_an_application(tmp_path: Path) -> None:
    assert system_image.prepare(_tree(tmp_path, None)) == {"instance": "application"}
    assert system_image.boot_options({"instance": "application"}) == {}
    dangling = _tree(tmp_path / "b", "/nowhere")
    assert system_image.prepare(dangling) == {"instance": "application"}


def test_other_inits_get_sigpwr(tmp_path: Path) -> None:
    props = system_image.prepare(_tree(tmp_path, "../bin/busybox"))
    assert props["stop_signal"] == "SIGPWR"
    assert system.stop_signal({"init": "/sbin/init", "stop_signal": "SIGPWR"}) \
        == signal.SIGPWR


def test_stop_signals() -> None:
    assert system.stop_signal({}) == signal.SIGTERM
    assert system.stop_signal({"init": "/sbin/init"}) == signal.SIGRTMIN + 3
    assert system.stop_signal({"init": "/sbin/init", "stop_signal": "SIGBOGUS"}) \
        == signal.SIGTERM


def _spec(options: dict[str, str], privileged: bool = False) -> InstanceSpec:
    return InstanceSpec(host_id="default_s", hostname="s", instance_dir=Path("/x/i"),
                        rootfs=Path("/x/r"), command=["/sbin/init"], options=options,
                        privileged=privileged)


def test_system_config_gives_init_what_it_needs() -> None:
    spec = _spec({"init": "/sbin/init", "stop_signal": "SIGRTMIN+3"})
    config = build_config(spec, "/cumulo/default_s")
    assert "container=cumulo" in config["process"]["env"]
    assert config["process"]["noNewPrivileges"] is False
    assert "CAP_SYS_ADMIN" in config["process"]["capabilities"]["bounding"]
    denied = config["linux"]["seccomp"]["syscalls"][0]["names"]
    assert "mount" not in denied and "reboot" not in denied and "kexec_load" in denied
    by_dest = {m["destination"]: m for m in config["mounts"]}
    assert by_dest["/run"]["type"] == "tmpfs" and by_dest["/run/lock"]["type"] == "tmpfs"
    assert "rw" in by_dest["/sys/fs/cgroup"]["options"]
    dests = [m["destination"] for m in config["mounts"]]
    assert dests.index("/run") < dests.index("/run/lock")
    assert config["mounts"] == mounts(spec)   # a restart rewrites the same mounts


def test_privileged_system_container_keeps_default_caps_and_app_is_unchanged() -> None:
    priv = build_config(_spec({"init": "/sbin/init"}, privileged=True), "/c/p")
    assert "CAP_SYS_ADMIN" not in priv["process"]["capabilities"]["bounding"]
    app = build_config(_spec({}), "/c/a")
    assert app["process"]["noNewPrivileges"] is True
    assert "/run" not in {m["destination"] for m in app["mounts"]}
    assert "ro" in {m["destination"]: m for m in app["mounts"]}["/sys/fs/cgroup"]["options"]
