"""System images: a root filesystem whose init (systemd) boots it as a whole OS.

`prepare` runs on a freshly built or imported tree: when it has ``/sbin/init`` it
writes what a container needs to boot it (DHCP on every ``eth*`` with
systemd-networkd, units that cannot work in an unprivileged container masked)
and returns the image properties saying so: ``instance=system``, ``init`` and
``stop_signal``; cloud-init, if the tree has it, reads only the NoCloud seed Cumulo
gives each instance. An image without an init is an application image
(``instance=application``): its command is PID 1, as before.
"""

from __future__ import annotations

import os
from pathlib import Path

INSTANCE = "instance"               # image property: system or application
SYSTEM, APPLICATION = "system", "application"
INIT = "init"                       # image property and instance option: init's path
STOP_SIGNAL = "stop_signal"         # image property and instance option
SYSTEMD_STOP = "SIGRTMIN+3"         # systemd: isolate poweroff.target
SYSV_STOP = "SIGPWR"                # sysvinit, busybox init: power off

# units that fail, or wait for what a container has not, in an unprivileged container
# (Incus's and systemd-nspawn's images mask the same kind of units)
MASKED_UNITS = (
    "systemd-udevd.service", "systemd-udevd-control.socket", "systemd-udevd-kernel.socket",
    "systemd-udev-trigger.service", "systemd-udev-settle.service",
    "systemd-modules-load.service", "sys-kernel-config.mount", "sys-kernel-debug.mount",
    "sys-kernel-tracing.mount", "sys-fs-fuse-connections.mount", "dev-hugepages.mount",
    "systemd-remount-fs.service", "systemd-sysctl.service", "systemd-timesyncd.service",
    "getty-static.service", "systemd-journald-audit.socket", "systemd-binfmt.service",
    "proc-sys-fs-binfmt_misc.automount", "systemd-firstboot.service",
    "systemd-pstore.service", "console-getty.service",
)
NETWORK_FILE = "etc/systemd/network/80-cumulo-eth.network"
NETWORK = """# written by Cumulo's image builder: every NIC takes its address by DHCP
[Match]
Name=eth*

[Network]
DHCP=yes
"""


# networkd asks hostnamed to take the lease's name, which refuses it without polkit:
# set it from the lease as root once the network is up (the instance's name, by dnsmasq)
HOSTNAME_UNIT = "cumulo-hostname.service"
HOSTNAME_SERVICE = """# written by Cumulo's image builder
[Unit]
Description=Hostname from the DHCP lease (the instance's name)
Wants=systemd-networkd-wait-online.service
After=systemd-networkd-wait-online.service
ConditionFileNotEmpty=!/etc/hostname

[Service]
Type=oneshot
ExecStart=/bin/sh -c 'n=$$(sed -n "s/^HOSTNAME=//p" /run/systemd/netif/leases/* | head -n1);\
 [ -z "$$n" ] || hostname "$$n"'

[Install]
WantedBy=multi-user.target
"""


def _init(rootfs: Path) -> Path | None:
    """Where /sbin/init points inside the tree (None: no init)."""
    path = rootfs / "sbin/init"
    for _ in range(10):
        if not path.is_symlink():
            return path if path.is_file() else None
        target = Path(os.readlink(path))
        path = rootfs / target.relative_to("/") if target.is_absolute() else path.parent / target
    return None


def prepare(rootfs: Path) -> dict[str, str]:
    """Make an image with an init bootable in a container; its properties."""
    init = _init(rootfs)
    if init is None:
        return {INSTANCE: APPLICATION}
    _cloud_init(rootfs)    # its seed is in /var/lib/cloud/seed (drivers/container/seed.py)
    if "systemd" not in init.name:
        return {INSTANCE: SYSTEM, INIT: "/sbin/init", STOP_SIGNAL: SYSV_STOP}
    _mask(rootfs)
    _networkd(rootfs)
    return {INSTANCE: SYSTEM, INIT: "/sbin/init", STOP_SIGNAL: SYSTEMD_STOP}


def prepare_vm(rootfs: Path) -> None:
    """A tree for a VM disk: DHCP on eth*, the hostname from the lease; no unit is
    masked, a VM has udev and a kernel of its own; cloud-init on the NoCloud seed only."""
    _networkd(rootfs)
    _cloud_init(rootfs)
    _write(rootfs, f"etc/systemd/system/{HOSTNAME_UNIT}", HOSTNAME_SERVICE)
    wants = rootfs / "etc/systemd/system/multi-user.target.wants" / HOSTNAME_UNIT
    if not wants.is_symlink():
        wants.symlink_to(f"/etc/systemd/system/{HOSTNAME_UNIT}")


# cloud-init looks only for Cumulo's NoCloud seed (a VM's "cidata" disk, a system
# container's /var/lib/cloud/seed/nocloud-net): without it, ds-identify
# turns cloud-init off at once instead of probing network metadata services at boot.
# C.UTF-8 is built into glibc: no locale-gen at first boot (slow on TCG)
CLOUD_CFG_FILE = "etc/cloud/cloud.cfg.d/90_cumulo.cfg"
CLOUD_CFG = """# written by Cumulo's image builder: the seed comes from Cumulo (NoCloud)
datasource_list: [ NoCloud ]
locale: C.UTF-8
"""


def _write(rootfs: Path, name: str, text: str) -> None:
    """A config file of the image, world-readable."""
    path = rootfs / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o644)


def _cloud_init(rootfs: Path) -> None:
    """Point cloud-init (if the tree has it) at the NoCloud datasource only."""
    if (rootfs / "etc/cloud").is_dir():
        _write(rootfs, CLOUD_CFG_FILE, CLOUD_CFG)


def _mask(rootfs: Path) -> None:
    etc = rootfs / "etc/systemd/system"
    etc.mkdir(parents=True, exist_ok=True)
    for unit in MASKED_UNITS:
        link = etc / unit
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("/dev/null")


def _networkd(rootfs: Path) -> None:
    """DHCP on eth* through systemd-networkd, enabled as `systemctl enable` would."""
    if not (rootfs / "lib/systemd/systemd-networkd").exists():
        return
    _write(rootfs, NETWORK_FILE, NETWORK)
    wants = {
        "multi-user.target.wants": "systemd-networkd.service",
        "sockets.target.wants": "systemd-networkd.socket",
        "network-online.target.wants": "systemd-networkd-wait-online.service",
    }
    for folder, unit in wants.items():
        link = rootfs / "etc/systemd/system" / folder / unit
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(f"/lib/systemd/system/{unit}")


def boot_options(properties: dict[str, str]) -> dict[str, str]:
    """The instance options that boot an image's init (empty for an application)."""
    if properties.get(INSTANCE) != SYSTEM or not properties.get(INIT):
        return {}
    return {INIT: properties[INIT], STOP_SIGNAL: properties.get(STOP_SIGNAL, SYSTEMD_STOP)}
