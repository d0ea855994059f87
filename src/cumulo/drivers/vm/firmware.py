"""VMs that boot from their own disk: SeaBIOS or UEFI (OVMF) runs the disk's bootloader.

No Cumulo kernel or initramfs: the guest's own chain (GRUB, its kernel, its
initramfs). UEFI is the default where Debian's ``ovmf`` is installed: its code is
shared read-only, each VM gets its own copy of the variable store. After QEMU
starts, `check_boot` watches the serial console (bounded) and turns a firmware that
finds nothing to boot into a clear error quoting the console's last lines.

Secure boot (``security.secureboot``, as Incus names it): OVMF's secure-boot build
with Microsoft's keys enrolled (Debian's ``OVMF_CODE_4M.secboot.fd`` and
``OVMF_VARS_4M.ms.fd``) on q35 with SMM, so the guest cannot write the variables
that hold the keys. It runs only EFI programs signed by those keys: Debian's shim
(signed by Microsoft), which runs GRUB and the kernel signed by Debian. An unsigned
chain stops in the firmware ("Access Denied") or in shim or GRUB; `check_boot` waits
for the kernel itself and says the chain was refused.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

from cumulo.errors import DriverError, UnsupportedError

BIOS, UEFI = "bios", "uefi"
CHOICES = (BIOS, UEFI)
OVMF_DIR = Path("/usr/share/OVMF")
OVMF_CODE, OVMF_VARS = "OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd"
# secure boot: the SMM build, variables with Microsoft's KEK and db (Debian's shim is
# signed by its UEFI CA) and secure boot on
SB_CODE, SB_VARS = "OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd"
SB_ARGS = ["-global", "driver=cfi.pflash01,property=secure,value=on"]
VARS_FILE = "efivars.fd"              # in the instance dir
# SeaBIOS prints to the serial port only when told where it is: fw_cfg's etc/sercon-port,
# read as an integer of 1, 2, 4 or 8 little-endian bytes (a string such as "0x3f8" is 5
# bytes: SeaBIOS ignored it and said nothing, so a disk with nothing to boot showed only
# as a timeout); a file in the instance dir, written where QEMU's command line is made
SERCON_FILE = "sercon-port"
SERCON_PORT = 0x3F8                   # COM1, the guest's ttyS0
SEABIOS_NO_RETRY = ["-boot", "strict=on,reboot-timeout=-1"]
BOOT_CHECK = 60.0                     # seconds for the bootloader to show up (TCG: ~5 s)
SB_BOOT_CHECK = 180.0                 # with secure boot: for the kernel (TCG: ~30 s)
POLL = 0.25
# the console says the guest's bootloader or kernel runs
STARTED = (b"Cumulo: GRUB", b"Linux version", b"Welcome to GRUB", b"Booting `")
# with secure boot GRUB's own lines are not enough: it may still refuse the kernel
SB_STARTED = (b"Linux version",)
# the console says secure boot refused a program of the chain: OVMF, shim, GRUB
REFUSED = (b"Access Denied", b"Security Violation", b"bad shim signature",
           b"prohibited by secure boot policy", b"shim_lock protocol not found")
# the console says the firmware found nothing to boot
FAILED = (b"No bootable device", b"Boot failed", b"No bootable option or device",
          b"BdsDxe: failed to load", b"Nothing to boot",
          b"Shell> ", b"grub rescue>", b"error: no such partition",
          b"Press any key to continue")


def ovmf_dir() -> Path:
    """Where OVMF is (CUMULO_OVMF_DIR overrides it: tests of a host without it)."""
    return Path(os.environ.get("CUMULO_OVMF_DIR", str(OVMF_DIR)))


def has_uefi() -> bool:
    return (ovmf_dir() / OVMF_CODE).is_file() and (ovmf_dir() / OVMF_VARS).is_file()


def has_secure_boot() -> bool:
    return (ovmf_dir() / SB_CODE).is_file() and (ovmf_dir() / SB_VARS).is_file()


def choose(asked: str | None, secure_boot: bool = False) -> str:
    """The firmware for a disk boot: the one asked for, else UEFI where OVMF is installed."""
    if secure_boot:
        if asked == BIOS:
            raise UnsupportedError("secure boot is a UEFI feature: drop --firmware bios"
                                   " (or --secure-boot)")
        if not has_secure_boot():
            raise UnsupportedError(
                f"--secure-boot needs OVMF's secure-boot build with Microsoft's keys"
                f" ({ovmf_dir() / SB_CODE} and {SB_VARS}): apt-get install ovmf")
        return UEFI
    if asked == UEFI and not has_uefi():
        raise UnsupportedError(f"--firmware uefi needs OVMF ({ovmf_dir() / OVMF_CODE} is"
                               " missing): apt-get install ovmf, or use --firmware bios")
    if asked in CHOICES:
        return asked
    return UEFI if has_uefi() else BIOS


def prepare_vars(instance_dir: Path, secure_boot: bool = False) -> Path:
    """This VM's own UEFI variable store (boot entries live there; with secure boot, the
    enrolled keys and the SecureBoot switch)."""
    dest = instance_dir / VARS_FILE
    if not dest.exists():
        try:
            shutil.copyfile(ovmf_dir() / (SB_VARS if secure_boot else OVMF_VARS), dest)
        except OSError as err:
            raise DriverError(f"cannot copy the UEFI variable store: {err}") from err
    return dest


def sercon_file(instance_dir: Path) -> Path:
    """The file telling SeaBIOS its serial console's port (see SERCON_FILE)."""
    path = instance_dir / SERCON_FILE
    data = SERCON_PORT.to_bytes(2, "little")
    try:
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
    except OSError as err:
        raise DriverError(f"cannot write SeaBIOS's console port file: {err}") from err
    return path


def qemu_args(firmware: str, vars_file: Path | None, instance_dir: Path,
              secure_boot: bool = False) -> list[str]:
    """The firmware's flash (UEFI) or SeaBIOS's settings; with secure boot the flash
    is writable only from SMM (the machine needs smm=on, see qemu_cmd)."""
    if firmware == UEFI and vars_file is not None:
        code = ovmf_dir() / (SB_CODE if secure_boot else OVMF_CODE)
        return [*(SB_ARGS if secure_boot else []),
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={code}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_file}"]
    return ["-fw_cfg", f"name=etc/sercon-port,file={sercon_file(instance_dir)}",
            *SEABIOS_NO_RETRY]


def _last_lines(data: bytes, count: int = 2, markers: tuple[bytes, ...] = FAILED) -> str:
    """The line naming the failure (if any) and the last ones, escapes removed."""
    text = re.sub(r"\x1b\[[0-9;?=]*[A-Za-z]|\x1b.", "", data.decode(errors="replace"))
    lines = [" ".join(ln.split()) for ln in text.replace("\r", "\n").split("\n")]
    lines = [ln for ln in lines if ln]
    telling = [ln for ln in lines if any(m.decode() in ln for m in markers)][:1]
    return " | ".join(dict.fromkeys(telling + lines[-count:])) or "nothing on the console"


def check_boot(console: Path, offset: int, alive: object, timeout: float = BOOT_CHECK,
               secure_boot: bool = False) -> None:
    """Return once the console shows the bootloader or kernel (with secure boot: the
    kernel); raise when it shows the firmware found nothing to boot, secure boot refused
    a program of the chain, QEMU died, or nothing started within ``timeout`` (SeaBIOS
    may say nothing at all). ``alive`` tells whether QEMU still runs."""
    deadline = time.monotonic() + timeout
    started = SB_STARTED if secure_boot else STARTED
    while time.monotonic() < deadline:
        try:
            with open(console, "rb") as f:
                f.seek(offset)
                data = f.read()
        except OSError:
            data = b""
        if secure_boot and (said := next((m for m in REFUSED if m in data), None)):
            raise DriverError(
                f"secure boot refused the VM's boot chain ({said.decode()}): a bootloader or"
                " kernel on its disk is not signed by a key the firmware trusts (use a signed"
                " image such as `cumulo image build debian/12 --vm`, or launch without"
                f" --secure-boot); console: {_last_lines(data, markers=REFUSED)}")
        if any(m in data for m in FAILED):
            raise DriverError(f"the VM found nothing to boot on its disk: {_last_lines(data)}")
        if any(m in data for m in started):
            return
        if not alive():  # type: ignore[operator]
            raise DriverError(f"the VM stopped while booting: {_last_lines(data)}")
        time.sleep(POLL)
    raise DriverError(f"no bootloader started from the VM's disk within {timeout:.0f}s"
                      f" (console: {_last_lines(data)})")
