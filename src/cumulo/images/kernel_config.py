"""Kernel configurations for specialised guest kernels (``image build kernel``).

Lupine Linux's recipe: start from ``tinyconfig`` and add only what the guest needs. A
profile is the base an app VM needs (64-bit, PVH entry for QEMU's microvm, virtio-mmio,
the serial console, an initramfs, ELF); features add more, one fragment each
(``--with net,block``). The text of the merged fragments is what the build cache is
keyed on, so the same request always means the same configuration.
"""

from __future__ import annotations

import hashlib

from cumulo.errors import InvalidInputError

# What an app VM boots with on microvm: a static program as the initramfs's init, its
# output on ttyS0, its exit status in the panic line (printk with timestamps, as the
# app VM driver reads it). PVH lets QEMU start the uncompressed vmlinux directly. -O2,
# not tinyconfig's -Os: -Os makes memset/memcpy byte-wise ``rep stosb``/``movsb``, one
# emulated iteration per byte on TCG; -O2 calls the kernel's word-wise ones (0.7x the
# boot for 0.15 MiB more image).
APP = """\
CONFIG_64BIT=y
CONFIG_PRINTK=y
CONFIG_PRINTK_TIME=y
CONFIG_LOG_BUF_SHIFT=12
CONFIG_BLK_DEV_INITRD=y
CONFIG_RD_GZIP=y
CONFIG_BINFMT_ELF=y
CONFIG_TTY=y
CONFIG_SERIAL_8250=y
CONFIG_SERIAL_8250_CONSOLE=y
CONFIG_HYPERVISOR_GUEST=y
CONFIG_PVH=y
CONFIG_PARAVIRT=y
CONFIG_KVM_GUEST=y
CONFIG_X86_MPPARSE=y
CONFIG_VIRTIO_MENU=y
CONFIG_VIRTIO=y
CONFIG_VIRTIO_MMIO=y
CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES=y
CONFIG_FUTEX=y
CONFIG_EPOLL=y
CONFIG_PROC_FS=y
CONFIG_SYSFS=y
CONFIG_DEVTMPFS=y
CONFIG_INPUT=n
CONFIG_VT=n
CONFIG_VGA_CONSOLE=n
CONFIG_HID=n
CONFIG_SERIO=n
CONFIG_RD_BZIP2=n
CONFIG_RD_LZMA=n
CONFIG_RD_XZ=n
CONFIG_RD_LZO=n
CONFIG_RD_LZ4=n
CONFIG_RD_ZSTD=n
CONFIG_LEGACY_PTYS=n
CONFIG_SCHED_DEBUG=n
CONFIG_CC_OPTIMIZE_FOR_PERFORMANCE=y
CONFIG_CC_OPTIMIZE_FOR_SIZE=n
"""

PROFILES = {"app": APP}

# one fragment per need, as Lupine's per-application options
FEATURES = {
    # a virtio NIC and a minimal IPv4 stack; the kernel takes its address by DHCP before
    # the program starts (ip=dhcp on the command line of an app VM with a network)
    "net": """\
CONFIG_NET=y
CONFIG_INET=y
CONFIG_IP_PNP=y
CONFIG_IP_PNP_DHCP=y
CONFIG_UNIX=y
CONFIG_NETDEVICES=y
CONFIG_NET_CORE=y
CONFIG_VIRTIO_NET=y
CONFIG_IPV6=n
""",
    # virtio disks (volumes) and ext4 on them
    "block": """\
CONFIG_BLOCK=y
CONFIG_BLK_DEV=y
CONFIG_VIRTIO_BLK=y
CONFIG_EXT4_FS=y
""",
    # a TPM 2.0: QEMU's tpm-tis at its fixed address (0xfed40000) on microvm, whose ACPI
    # tables describe no TPM, so the driver is forced to probe it (app VMs' --tpm)
    "tpm": """\
CONFIG_TCG_TPM=y
CONFIG_TCG_TIS=y
""",
    # random numbers from the host (virtio-rng) for programs that block on getrandom
    "rng": """\
CONFIG_HW_RANDOM=y
CONFIG_HW_RANDOM_VIRTIO=y
""",
}


def parse_features(text: str | None) -> tuple[str, ...]:
    """``"net,block"`` -> ("block", "net"): known, unique, sorted (one key per set)."""
    names = sorted({f.strip() for f in (text or "").split(",") if f.strip()})
    unknown = [f for f in names if f not in FEATURES]
    if unknown:
        raise InvalidInputError(f"unknown kernel feature {unknown[0]!r}: use any of"
                                f" {', '.join(sorted(FEATURES))}")
    return tuple(names)


def fragment(profile: str, features: tuple[str, ...]) -> str:
    """The configuration fragment merged onto tinyconfig."""
    if profile not in PROFILES:
        raise InvalidInputError(f"unknown kernel profile {profile!r}: use"
                                f" {', '.join(sorted(PROFILES))}")
    return PROFILES[profile] + "".join(FEATURES[f] for f in features)


def requested(text: str) -> dict[str, str]:
    """CONFIG_X -> "y" / "n" / value, from a fragment."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.startswith("CONFIG_"):
            out[key] = value
    return out


def unmet(fragment_text: str, config_text: str) -> list[str]:
    """Options of the fragment that the final .config does not have as asked (a
    dependency the fragment lacks): ``CONFIG_X=y (got n)``."""
    got: dict[str, str] = {}
    for line in config_text.splitlines():
        if line.startswith("CONFIG_"):
            key, _, value = line.partition("=")
            got[key] = value
        elif line.startswith("# CONFIG_") and line.endswith(" is not set"):
            got[line[2:-len(" is not set")]] = "n"
    return [f"{k}={v} (got {got.get(k, 'n')})" for k, v in requested(fragment_text).items()
            if got.get(k, "n") != v]


def cache_key(source: str, toolchain: str, fragment_text: str) -> str:
    """What the build depends on: the source package's version, the compiler's, the
    fragment. Same key, same kernel (see kernel_build for reproducibility)."""
    h = hashlib.sha256()
    for part in (source, toolchain, fragment_text):
        h.update(part.encode() + b"\0")
    return h.hexdigest()
