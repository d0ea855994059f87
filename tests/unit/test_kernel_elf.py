"""kernel_elf.compact: the padding goes, every byte the kernel needs stays at its address."""

from __future__ import annotations

from pathlib import Path

from cumulo.images import kernel_elf as k

BASE = 0xFFFFFFFF81000000
PAD = 0x200000          # like vmlinux: the first segment 2 MiB into the file


def _elf(tmp: Path) -> tuple[Path, bytes]:
    """One R+X segment: code, 128 KiB of int3 filler, 64 KiB of zeros that are a section's
    data, code, then 128 KiB of zeros between sections, rodata; and a note in it."""
    seg = (b"\x90" * 0x3000 + b"\xcc" * 0x20000 + b"\0" * 0x10000 + b"\x90" * 0x1000
           + b"\0" * 0x20000 + b"rodata" * 100 + b"NOTE")
    note_off = PAD + len(seg) - 4
    sections = [(PAD, 0x23000 + 0x10000 + 0x1000),              # .text with its zeros
                (PAD + 0x54000, len(seg) - 0x54000)]             # .rodata
    shoff = PAD + len(seg)
    data = bytearray(shoff + k.SHDR.size * (len(sections) + 1))
    data[:k.EHDR.size] = k.EHDR.pack(b"\x7fELF\x02\x01\x01" + bytes(9), 2, 62, 1,
                                     BASE, 64, shoff, 0, 64, 56, 2, 64, 3, 0)
    data[64:64 + 112] = (
        k.PHDR.pack(k.PT_LOAD, 5, PAD, BASE, 0x1000000, len(seg), len(seg) + 0x5000, PAD)
        + k.PHDR.pack(k.PT_NOTE, 4, note_off, BASE + len(seg) - 4, 0, 4, 4, 4))
    data[PAD:shoff] = seg
    for i, (off, size) in enumerate(sections, 1):
        data[shoff + i * 64:shoff + (i + 1) * 64] = k.SHDR.pack(
            0, 1, k.SHF_ALLOC, BASE + off - PAD, off, size, 0, 0, 16, 0)
    src = tmp / "vmlinux"
    src.write_bytes(bytes(data))
    return src, seg


def _memory(path: Path) -> dict[int, int]:
    """vaddr -> byte as a loader would write them (file bytes only)."""
    data = path.read_bytes()
    eh = k.EHDR.unpack_from(data)
    out = {}
    for i in range(eh[10]):
        t, _f, off, vaddr, _p, filesz, _m, _a = k.PHDR.unpack_from(data, eh[5] + i * 56)
        if t == k.PT_LOAD:
            out.update({vaddr + j: data[off + j] for j in range(filesz)})
    return out


def test_compact_drops_filler_and_gaps_and_keeps_data(tmp_path: Path) -> None:
    src, seg = _elf(tmp_path)
    dst = tmp_path / "compact"
    k.compact(src, dst)
    before, after = _memory(src), _memory(dst)
    # what is still loaded is byte for byte what was there
    assert all(before[a] == b for a, b in after.items())
    dropped = sorted(set(before) - set(after))
    # the int3 run and the zeros between sections went; the section's zeros stayed
    assert dropped == [*range(BASE + 0x3000, BASE + 0x23000),
                       *range(BASE + 0x34000, BASE + 0x54000)]
    assert dst.stat().st_size < len(seg) and src.stat().st_size > PAD
    assert k.loaded_bytes(dst) == (len(seg) - 0x40000, len(seg) - 0x40000 + 0x5000)
    # the note (PVH's entry point) is still where a program header says
    data = dst.read_bytes()
    eh = k.EHDR.unpack_from(data)
    notes = [p for p in (k.PHDR.unpack_from(data, eh[5] + i * 56) for i in range(eh[10]))
             if p[0] == k.PT_NOTE]
    assert [data[p[2]:p[2] + p[5]] for p in notes] == [b"NOTE"]
    # each piece starts at the same offset within a page in the file as in memory
    loads = [p for p in (k.PHDR.unpack_from(data, eh[5] + i * 56) for i in range(eh[10]))
             if p[0] == k.PT_LOAD]
    assert all(p[2] % k.PAGE == p[3] % k.PAGE for p in loads)
