"""A disk a VM boots through its firmware: partition table, ext4 root, GRUB for BIOS and UEFI.

Made from a root filesystem tree that holds Debian's own kernel and initramfs
(installed by apt in mmdebstrap), without mapping partitions on the host (no
device-mapper here, see HOST-NOTES.md): ``mke2fs -d`` fills the root partition's
ext4 in a file, ``mkfs.vfat`` and ``mcopy`` the EFI system partition, ``sfdisk``
writes a GPT with a BIOS boot partition, and the pieces are copied in at their
offsets. GRUB is made on the host with ``grub-mkimage`` (no grub-install):

- BIOS: ``boot.img`` in the MBR and ``core.img`` in the BIOS boot partition,
  with the two sector pointers ``grub-bios-setup`` would write (``_bios``).
- UEFI: ``BOOTX64.EFI`` on the EFI partition (the removable-media path every
  firmware tries), with GRUB's ``tpm`` module: with a vTPM it measures what it runs
  (see docs/measured-boot.md). When the tree has Debian's signed boot chain
  (``shim-signed`` and ``grub-efi-amd64-signed``, installed by apt in the guest),
  ``BOOTX64.EFI`` is shim, signed by Microsoft, next to Debian's signed GRUB
  (``grubx64.efi``, monolithic, with ``tpm``): the disk boots with secure boot on, and
  GRUB checks the kernel's signature through shim. Without them: GRUB made here.

Both load ``/boot/grub/grub.cfg`` from the root partition, which boots
``/vmlinuz`` and ``/initrd.img`` with the serial console on ttyS0.
"""

from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

from cumulo.errors import DriverError
from cumulo.host.tools import not_installed
from cumulo.storage import ext4
from cumulo.storage.tools import run

MIB = 1024 * 1024
SECTOR = 512
BIOS_BOOT = (1 * MIB, 3 * MIB)           # start, end of the BIOS boot partition (core.img)
ESP = (3 * MIB, 67 * MIB)                # the EFI system partition
ROOT_START = 67 * MIB
ROOT_LABEL = "cumulo-root"
GRUB_PC = Path("/usr/lib/grub/i386-pc")
GRUB_EFI = Path("/usr/lib/grub/x86_64-efi")
# what core.img needs to read the root partition and boot Linux from it
MODULES = ("part_gpt", "part_msdos", "ext2", "normal", "linux", "configfile", "search",
           "search_label", "serial", "terminal", "echo", "test", "ls", "cat")
PREFIX = "(hd0,gpt3)/boot/grub"
# boot.img: where the first sector of core.img is (grub-bios-setup's kernel_sector)
KERNEL_SECTOR_AT = 0x5C
DRIVE_CHECK_AT = 0x66                     # a jmp grub-bios-setup turns into two nops
LOAD_SEGMENT = 0x820                      # where diskboot loads the rest of core.img
MBR_CODE = 0x1B8                          # boot.img code ends where the disk signature begins
CMDLINE = "root=LABEL=cumulo-root ro console=tty0 console=ttyS0,115200n8 net.ifnames=0"
GRUB_CFG = f"""# written by Cumulo's image builder
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=0
# measured boot (UEFI with a TPM): GRUB extends PCR 8 with its commands and the kernel's
# command line, PCR 9 with the files it reads (grub.cfg, kernel, initrd); linuxefi runs
# the kernel's EFI stub, which hands the firmware's event log on to the kernel
if [ "$grub_platform" = "efi" ]; then insmod tpm; set linux=linuxefi; set initrd=initrdefi
else set linux=linux; set initrd=initrd; fi
menuentry "Debian" {{
    echo "Cumulo: GRUB loads the kernel"
    search --no-floppy --label --set=root {ROOT_LABEL}
    $linux /vmlinuz {CMDLINE}
    $initrd /initrd.img
}}
"""
FSTAB = f"LABEL={ROOT_LABEL} / ext4 errors=remount-ro 0 1\n"
# grub-common is in the guest (the signed GRUB needs it): a kernel upgrade there runs
# update-grub, which rewrites grub.cfg; it keeps the serial console and no menu delay
GRUB_DEFAULTS = f"""# written by Cumulo's image builder
GRUB_TIMEOUT=0
GRUB_CMDLINE_LINUX="{CMDLINE.partition(' ro ')[2]}"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
"""
# Debian's signed boot chain in the tree (packages shim-signed, grub-efi-amd64-signed)
SIGNED = {"BOOTX64.EFI": "usr/lib/shim/shimx64.efi.signed",
          "mmx64.efi": "usr/lib/shim/mmx64.efi.signed",      # MokManager, which shim may run
          "grubx64.efi": "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"}
# the signed GRUB reads grub.cfg from its $prefix (/EFI/debian) or its own dir: this one
# hands over to the root partition's, as grub-install's would
STUB_CFG = f"""search --no-floppy --label --set=root {ROOT_LABEL}
set prefix=($root)/boot/grub
configfile $prefix/grub.cfg
"""


def write_boot_config(tree: Path) -> None:
    """grub.cfg and fstab inside the tree (before its ext4 is made)."""
    for name, text in (("boot/grub/grub.cfg", GRUB_CFG), ("etc/fstab", FSTAB),
                       ("etc/default/grub.d/cumulo.cfg", GRUB_DEFAULTS)):
        path = tree / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o644)
    for link in ("vmlinuz", "initrd.img"):
        if not (tree / link).exists():
            raise DriverError(f"the tree has no /{link}: install a kernel (linux-image-amd64)")


def signed_chain(tree: Path) -> bool:
    """Whether the tree holds Debian's signed shim and GRUB (a secure-boot capable disk)."""
    return all((tree / path).is_file() for path in SIGNED.values())


def has_grub() -> tuple[bool, bool]:
    """(BIOS, UEFI) GRUB modules on this host."""
    return (GRUB_PC / "boot.img").is_file(), (GRUB_EFI / "linux.mod").is_file()


def make_disk(tree: Path, out: Path, size: int, work: Path) -> None:
    """A raw bootable disk of ``size`` bytes at ``out`` from ``tree``."""
    write_boot_config(tree)
    root_size = size - ROOT_START - MIB          # the backup GPT at the end
    root = work / "root.ext4"
    ext4.make(root, root_size, tree=tree)
    run(["tune2fs", "-L", ROOT_LABEL, str(root)])
    esp = work / "esp.vfat"
    bios, uefi = has_grub()
    if uefi or signed_chain(tree):
        _esp(esp, work, tree)
    with open(out, "wb") as f:
        f.truncate(size)
    table = (f"label: gpt\n"
             f"start={BIOS_BOOT[0] // SECTOR}, size={(BIOS_BOOT[1] - BIOS_BOOT[0]) // SECTOR},"
             f" type=21686148-6449-6E6F-744E-656564454649, name=bios\n"
             f"start={ESP[0] // SECTOR}, size={(ESP[1] - ESP[0]) // SECTOR},"
             f" type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp\n"
             f"start={ROOT_START // SECTOR}, size={root_size // SECTOR},"
             f" type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n")
    _sfdisk(out, table)
    _copy_in(root, out, ROOT_START)
    root.unlink()
    if esp.exists():
        _copy_in(esp, out, ESP[0])
        esp.unlink()
    if bios:
        _bios(out, work)


def _sfdisk(disk: Path, table: str) -> None:
    try:
        proc = subprocess.run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel",
                               str(disk)], input=table, capture_output=True, text=True,
                              timeout=60, check=False)
    except FileNotFoundError:
        raise not_installed("sfdisk", "partition a VM disk") from None
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise DriverError(f"sfdisk failed: {lines[-1]}")


def _copy_in(src: Path, disk: Path, offset: int) -> None:
    """Copy ``src`` into ``disk`` at ``offset``, keeping holes (zero blocks skipped)."""
    zero = bytes(MIB)
    with open(src, "rb") as fin, open(disk, "r+b") as fout:
        pos = 0
        while chunk := fin.read(MIB):
            if chunk != zero[:len(chunk)]:
                fout.seek(offset + pos)
                fout.write(chunk)
            pos += len(chunk)


def _bios(disk: Path, work: Path) -> None:
    """core.img in the BIOS boot partition, boot.img in the MBR, pointers set."""
    core = work / "core.img"
    run(["grub-mkimage", "-O", "i386-pc", "-o", str(core), "-p", PREFIX,
         "biosdisk", *MODULES])
    data = bytearray(core.read_bytes())
    sectors = (len(data) + SECTOR - 1) // SECTOR
    if sectors * SECTOR > BIOS_BOOT[1] - BIOS_BOOT[0]:
        raise DriverError(f"GRUB's core.img ({len(data)} bytes) does not fit its partition")
    first = BIOS_BOOT[0] // SECTOR
    # diskboot.img's blocklist, the last 12 bytes of core.img's first sector:
    # start (u64), length (u16) of the rest of core.img; its load segment stays
    struct.pack_into("<QHH", data, SECTOR - 12, first + 1, sectors - 1, LOAD_SEGMENT)
    struct.pack_into("<QHH", data, SECTOR - 24, 0, 0, 0)   # the list ends there
    boot = bytearray((GRUB_PC / "boot.img").read_bytes())
    struct.pack_into("<Q", boot, KERNEL_SECTOR_AT, first)
    boot[DRIVE_CHECK_AT:DRIVE_CHECK_AT + 2] = b"\x90\x90"   # trust the BIOS's drive number
    with open(disk, "r+b") as f:
        f.seek(BIOS_BOOT[0])
        f.write(data)
        f.seek(0)
        f.write(boot[:MBR_CODE])    # the protective MBR's table stays


def _esp(esp: Path, work: Path, tree: Path) -> None:
    """A FAT EFI system partition with the tree's signed shim and GRUB at EFI/BOOT, or
    else GRUB made here at EFI/BOOT/BOOTX64.EFI."""
    with open(esp, "wb") as f:
        f.truncate(ESP[1] - ESP[0])
    run(["mkfs.vfat", "-F", "32", "-n", "EFI", str(esp)])
    img = f"-i{esp}"
    run(["mmd", img, "::/EFI", "::/EFI/BOOT"])
    if signed_chain(tree):
        stub = work / "grub.cfg"
        stub.write_text(STUB_CFG)
        run(["mmd", img, "::/EFI/debian"])
        for name, path in SIGNED.items():
            run(["mcopy", img, str(tree / path), f"::/EFI/BOOT/{name}"])
        for where in ("BOOT", "debian"):
            run(["mcopy", img, str(stub), f"::/EFI/{where}/grub.cfg"])
        os.unlink(stub)
        return
    efi = work / "BOOTX64.EFI"
    run(["grub-mkimage", "-O", "x86_64-efi", "-o", str(efi), "-p", PREFIX, *MODULES,
         "part_gpt", "fat", "efi_gop", "tpm", "linuxefi"])
    run(["mcopy", img, str(efi), "::/EFI/BOOT/BOOTX64.EFI"])
    os.unlink(efi)
