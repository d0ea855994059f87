"""Storage: template-based (clone, the default) against image-based (``--copy``) instances,
and the disk throughput of an instance's root against the raw host directory.

Template: built offline, busybox-static plus ``--payload`` MiB of incompressible data (a
stand-in for a distribution's programs and libraries), imported as a rootfs tarball.

- Launch: ``--counts`` (1, 10, 50) containers launched one after another through the API
  (create + start, a sleeping PID 1) and as many VM root disks created (not booted), as
  clones and as copies, interleaved; the wall time per instance and what the pool grew
  by (allocated bytes, ``du``-style, as the API reports them), then all deleted.
- Throughput: fio on the host (sequential 1 MiB and random 4 KiB reads and writes,
  O_DIRECT) in a raw directory of the pool's filesystem, and in the mounted roots of
  running containers: an overlay clone, a full copy (bind mount) and a ``--disk`` clone
  (an overlay in a loop-mounted ext4); the container's own writes take these same mounts.
  For VMs, ``qemu-img bench`` (QEMU's block layer, no guest) on a clone's qcow2 (over the
  base disk) against a raw file in the same directory.

    flock /tmp/cumulo-heavy.lock .venv/bin/python -m bench.storage [--counts 1,10,50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.daemon import bench_daemon
from cumulo.client import Client

MIB = 1 << 20
SLEEP = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 1; done"]
APPLETS = ("sh", "cat", "sleep", "echo", "ls", "dd", "rm")
FIO_JOBS = {  # name: (rw, block size)
    "seq write 1M": ("write", "1M"),
    "seq read 1M": ("read", "1M"),
    "rand write 4k": ("randwrite", "4k"),
    "rand read 4k": ("randread", "4k"),
}


def make_template(top: Path, payload: int) -> Path:
    """A rootfs tarball: busybox-static and ``payload`` bytes of random data."""
    tree = top / "tree"
    for d in ("bin", "etc", "tmp", "usr/share/payload", "proc", "sys", "dev"):
        (tree / d).mkdir(parents=True)
    shutil.copy2("/bin/busybox", tree / "bin/busybox")
    for tool in APPLETS:
        (tree / "bin" / tool).symlink_to("busybox")
    with open(tree / "usr/share/payload/data.bin", "wb") as f:
        for _ in range(payload // MIB):
            f.write(os.urandom(MIB))
    tar = top / "template.tar"
    with tarfile.open(tar, "w") as t:
        t.add(tree, arcname=".")
    shutil.rmtree(tree)
    return tar


def pool_used(c: Client) -> int:
    return int(c.pool("default")["used"])


def launch_round(c: Client, image: str, kind: str, n: int, copy: bool) -> dict[str, float]:
    """Launch ``n`` instances one after another; seconds each and bytes the pool grew."""
    storage = {"copy": True} if copy else {}
    names = [f"{kind[:2]}{'cp' if copy else 'cl'}{i}" for i in range(n)]
    before = pool_used(c)
    t0 = time.perf_counter()
    for name in names:
        if kind == "container":
            c.create(name, image, command=SLEEP, start=True, storage=storage)
        else:
            c.create(name, image, type="vm", storage=storage)
    seconds = time.perf_counter() - t0
    grown = pool_used(c) - before
    for op in [c.delete(name, force=True, wait=False) for name in names]:
        c.wait(op)
    return {"per_instance_s": seconds / n, "disk_bytes": grown}


def fio(directory: Path, rw: str, bs: str, size: str, seconds: int) -> float:
    """Bytes per second of one fio job on a file in ``directory`` (removed afterwards)."""
    path = directory / "fio.bench"
    try:
        out = subprocess.run(
            ["fio", "--name=b", f"--filename={path}", f"--rw={rw}", f"--bs={bs}",
             f"--size={size}", "--direct=1", "--ioengine=psync", "--time_based",
             f"--runtime={seconds}", "--output-format=json"],
            check=True, capture_output=True, text=True, timeout=seconds + 120).stdout
    finally:
        path.unlink(missing_ok=True)
    job = json.loads(out)["jobs"][0]
    side = job["read"] if "read" in rw else job["write"]
    return float(side["bw_bytes"])


def qemu_img_bench(image: Path, fmt: str, write: bool, count: int) -> float:
    """Bytes per second of ``qemu-img bench`` (1 MiB sequential, O_DIRECT) on ``image``."""
    argv = ["qemu-img", "bench", "-f", fmt, "-t", "none", "-s", "1M", "-c", str(count),
            "-d", "4", *(["-w"] if write else []), str(image)]
    t0 = time.perf_counter()
    subprocess.run(argv, check=True, capture_output=True, timeout=600)
    return count * MIB / (time.perf_counter() - t0)


def median_of(repeat: int, fns: dict[str, Callable[[], float]]) -> dict[str, float]:
    """Each function ``repeat`` times, interleaved; the median of each."""
    got: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            got[k].append(fn())
    return {k: statistics.median(v) for k, v in got.items()}


def throughput(c: Client, state: Path, image: str, args: argparse.Namespace
               ) -> dict[str, dict[str, float]]:
    raw = state / "storage" / "default" / "raw-bench"
    raw.mkdir()
    c.create("ov", image, command=SLEEP, start=True)
    c.create("cp", image, command=SLEEP, start=True, storage={"copy": True})
    c.create("sz", image, command=SLEEP, start=True, storage={"disk": "1GiB"})
    roots = {"raw host dir": raw, "overlay clone": state / "instances" / "default_ov" / "rootfs",
             "full copy": state / "instances" / "default_cp" / "rootfs",
             "clone, --disk 1GiB": state / "instances" / "default_sz" / "rootfs"}
    out: dict[str, dict[str, float]] = {}
    for job, (rw, bs) in FIO_JOBS.items():
        out[job] = median_of(args.repeat, {
            where: (lambda d=d, rw=rw, bs=bs: fio(d, rw, bs, args.fio_size, args.seconds))
            for where, d in roots.items()})
    for name in ("ov", "cp", "sz"):
        c.delete(name, force=True)

    # VM root disks: QEMU's block layer on a clone's qcow2 against a raw file
    c.create("vm", image, type="vm")
    qcow2 = state / "storage" / "default" / "roots" / "default_vm" / "root.qcow2"
    flat = raw / "disk.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(flat), "1G"], check=True)
    count = max(1, min(512, int(args.fio_size.rstrip("M"))))
    for write in (True, False):
        out[f"qemu-img bench {'write' if write else 'read'} 1M"] = median_of(args.repeat, {
            "raw host dir": lambda w=write: qemu_img_bench(flat, "raw", w, count),
            "qcow2 clone": lambda w=write: qemu_img_bench(qcow2, "qcow2", w, count)})
    c.delete("vm", force=True)
    flat.unlink()
    raw.rmdir()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--counts", default="1,10,50", help="instances per launch round")
    ap.add_argument("--payload", type=int, default=96, help="MiB of data in the template")
    ap.add_argument("--repeat", type=int, default=3, help="fio runs per target (median)")
    ap.add_argument("--seconds", type=int, default=5, help="seconds per fio job")
    ap.add_argument("--fio-size", default="256M", help="fio file size")
    ap.add_argument("--no-vm", action="store_true", help="containers only")
    args = ap.parse_args()
    counts = [int(n) for n in args.counts.split(",")]
    kinds = ["container"] + ([] if args.no_vm else ["vm"])

    tmp = Path(tempfile.mkdtemp(prefix="cumulo-bench-storage-"))
    try:
        with bench_daemon() as (c, state, _parent):
            tar = make_template(tmp, args.payload * MIB)
            c.wait(c.import_image(str(tar), tar.name, alias="template"))
            tar.unlink()
            template = c.image("template")
            print(f"template: {template['size'] / MIB:.1f} MiB tree")
            print(f"{'kind':10} {'n':>3} {'clone s/inst':>13} {'copy s/inst':>12}"
                  f" {'copy/clone':>11} {'clone disk':>11} {'copy disk':>11} {'copy/clone':>11}")
            for n in counts:
                for kind in kinds:
                    clone = launch_round(c, "template", kind, n, copy=False)
                    copy = launch_round(c, "template", kind, n, copy=True)
                    print(f"{kind:10} {n:3d} {clone['per_instance_s']:13.3f}"
                          f" {copy['per_instance_s']:12.3f}"
                          f" {copy['per_instance_s'] / clone['per_instance_s']:10.1f}x"
                          f" {clone['disk_bytes'] / MIB:9.1f}Mi {copy['disk_bytes'] / MIB:9.1f}Mi"
                          f" {copy['disk_bytes'] / max(1, clone['disk_bytes']):10.0f}x",
                          flush=True)
            results = throughput(c, state, "template", args)
        print(f"\nthroughput, median of {args.repeat} (MiB/s; ratio to the raw host dir)")
        for job, row in results.items():
            base = row["raw host dir"]
            cells = "  ".join(f"{where} {bw / MIB:8.1f} ({bw / base:.2f}x)"
                              for where, bw in row.items())
            print(f"{job:26} {cells}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
