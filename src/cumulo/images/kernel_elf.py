"""The vmlinux that QEMU's microvm boots through PVH, without its alignment padding.

x86-64 Linux aligns its text, entry text, rodata and data to 2 MiB (large-page mappings,
page-table isolation), so a small kernel's vmlinux is mostly padding: in the file (the
first segment starts at offset 2 MiB, segments are 2 MiB apart) and in what QEMU loads
(int3 filler inside ``.text``, zeros between sections), which QEMU writes into guest RAM
and so makes resident on the host. `compact` writes an ELF whose loadable segments leave
out every page-aligned run of at least ``MIN_GAP`` filler bytes that no code or data
needs: ``0xcc`` (int3, the text filler) in executable segments, zeros only outside every section (a
zero run inside a section may be data the kernel expects zeroed, and fresh RAM is only
zero until the first reset). The pieces are packed in the file; sections go (PVH needs
the program headers and the PVH note only), the note is kept.
"""

from __future__ import annotations

import struct
from pathlib import Path

from cumulo.errors import InvalidInputError

PAGE = 0x1000
MIN_GAP = 64 * 1024
PT_LOAD, PT_NOTE = 1, 4
PF_X = 1
SHF_ALLOC = 0x2
SHT_NOBITS = 8
EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
PHDR = struct.Struct("<IIQQQQQQ")
SHDR = struct.Struct("<IIQQQQIIQQ")


def _filler_runs(data: bytes, start: int, end: int, value: int) -> list[tuple[int, int]]:
    """Page-aligned [a, b) inside [start, end) of ``data`` where every byte is ``value``."""
    runs, page = [], bytes([value]) * PAGE
    a = -(-start // PAGE) * PAGE
    run = None
    while a + PAGE <= end:
        if data[a:a + PAGE] == page:
            run = run if run is not None else a
        elif run is not None:
            runs.append((run, a))
            run = None
        a += PAGE
    if run is not None:
        runs.append((run, a))
    return [(x, y) for x, y in runs if y - x >= MIN_GAP]


def compact(src: Path, dst: Path) -> None:
    """Write ``src`` (a 64-bit little-endian vmlinux) to ``dst`` without its padding."""
    data = src.read_bytes()
    if data[:6] != b"\x7fELF\x02\x01":
        raise InvalidInputError(f"{src} is not a 64-bit little-endian ELF")
    eh = EHDR.unpack_from(data)
    phoff, shoff, phnum, shnum = eh[5], eh[6], eh[10], eh[12]
    phdrs = [PHDR.unpack_from(data, phoff + i * PHDR.size) for i in range(phnum)]
    # file ranges that hold a section's bytes: zeros there are data, not padding
    sections = [(s[4], s[4] + s[5]) for s in
                (SHDR.unpack_from(data, shoff + i * SHDR.size) for i in range(shnum))
                if s[2] & SHF_ALLOC and s[1] != SHT_NOBITS and s[5]]
    pieces: list[tuple[int, int, int, int, int]] = []  # flags, offset, vaddr, paddr, filesz
    tails: dict[int, int] = {}                          # piece index -> memsz beyond filesz
    for p_type, flags, off, vaddr, paddr, filesz, memsz, _align in phdrs:
        if p_type != PT_LOAD:
            continue
        end = off + filesz
        gaps = _filler_runs(data, off, end, 0xcc) if flags & PF_X else []
        gaps += [(a, b) for a, b in _filler_runs(data, off, end, 0)
                 if not any(a < s_end and s_start < b for s_start, s_end in sections)]
        at = off
        for a, b in sorted(gaps):
            if a > at:
                pieces.append((flags, at, vaddr + at - off, paddr + at - off, a - at))
            at = b
        pieces.append((flags, at, vaddr + at - off, paddr + at - off, end - at))
        tails[len(pieces) - 1] = memsz - filesz
    notes = [p for p in phdrs if p[0] == PT_NOTE]
    out = bytearray(EHDR.size + PHDR.size * (len(pieces) + len(notes)))
    new_phdrs = []
    for i, (flags, off, vaddr, paddr, filesz) in enumerate(pieces):
        out += bytes(-(len(out) - vaddr) % PAGE)     # offset = vaddr mod page, as ELF wants
        new_phdrs.append(PHDR.pack(PT_LOAD, flags, len(out), vaddr, paddr, filesz,
                                   filesz + tails.get(i, 0), PAGE))
        out += data[off:off + filesz]
    for _t, flags, off, vaddr, paddr, filesz, memsz, align in notes:
        out += bytes(-len(out) % 8)
        new_phdrs.append(PHDR.pack(PT_NOTE, flags, len(out), vaddr, paddr, filesz, memsz,
                                   align))
        out += data[off:off + filesz]
    header = list(eh)
    header[5], header[6], header[10], header[12], header[13] = EHDR.size, 0, len(new_phdrs), 0, 0
    out[:EHDR.size] = EHDR.pack(*header)
    out[EHDR.size:EHDR.size + PHDR.size * len(new_phdrs)] = b"".join(new_phdrs)
    dst.write_bytes(bytes(out))


def loaded_bytes(path: Path) -> tuple[int, int]:
    """(bytes QEMU writes into guest RAM from the file, the same plus zero-filled tails)."""
    data = path.read_bytes()
    eh = EHDR.unpack_from(data)
    loads = [p for p in (PHDR.unpack_from(data, eh[5] + i * PHDR.size) for i in range(eh[10]))
             if p[0] == PT_LOAD]
    return sum(p[5] for p in loads), sum(p[6] for p in loads)
