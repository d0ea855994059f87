"""App images: one static x86-64 program, the PID 1 of a single-application VM (appvm).

The program is checked here, before anything is stored: an ELF64 x86-64 executable with
no program interpreter (a dynamic one would need its loader and libraries in the guest,
which an app VM does not carry). The image's rootfs holds just ``/app``.
"""

from __future__ import annotations

import re
import struct

from cumulo.errors import InvalidInputError

MAX_SIZE = 64 * 1024 * 1024
APP_PATH = "app"               # inside the image's rootfs
EM_X86_64 = 62
ET_EXEC, ET_DYN = 2, 3
PT_INTERP = 3
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
RESERVED = {"dev"}             # the app VM's initramfs has /dev/console next to /NAME


def check_static(data: bytes, name: str) -> None:
    """InvalidInputError unless ``data`` is a static x86-64 ELF executable."""
    if not NAME_RE.match(name) or name in RESERVED:
        raise InvalidInputError(f"invalid app name {name!r}: use letters, digits and ._+-")
    if len(data) > MAX_SIZE:
        raise InvalidInputError(f"app {name!r} is {len(data)} bytes: at most {MAX_SIZE}")
    if data[:4] != b"\x7fELF":
        raise InvalidInputError(f"app {name!r} is not an ELF executable")
    if len(data) < 64 or data[4] != 2 or data[5] != 1:
        raise InvalidInputError(f"app {name!r} is not a 64-bit little-endian ELF file")
    e_type, e_machine = struct.unpack_from("<HH", data, 16)
    if e_machine != EM_X86_64:
        raise InvalidInputError(f"app {name!r} is not built for x86-64 (ELF machine"
                                f" {e_machine})")
    if e_type not in (ET_EXEC, ET_DYN):
        raise InvalidInputError(f"app {name!r} is not an executable (ELF type {e_type})")
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    if phnum == 0 or phoff + phentsize * phnum > len(data) or phentsize < 56:
        raise InvalidInputError(f"app {name!r} has no valid program headers")
    for i in range(phnum):
        off = phoff + i * phentsize
        p_type, = struct.unpack_from("<I", data, off)
        if p_type == PT_INTERP:
            interp_off, = struct.unpack_from("<Q", data, off + 8)
            interp_size, = struct.unpack_from("<Q", data, off + 32)
            interp = data[interp_off:interp_off + interp_size].rstrip(b"\0").decode(
                errors="replace")
            raise InvalidInputError(
                f"app {name!r} is dynamically linked (it needs {interp} and its libraries):"
                " an app VM runs one static program; rebuild it with gcc -static"
                " (or use busybox-static's /bin/busybox)")
    if e_type == ET_DYN and not _has_entry(data):
        raise InvalidInputError(f"app {name!r} is a shared library, not a program")


def _has_entry(data: bytes) -> bool:
    entry: int = struct.unpack_from("<Q", data, 24)[0]
    return entry != 0
