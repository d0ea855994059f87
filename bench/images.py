"""Image export and import through cumulod against plain GNU tar, side by side.

The image is debian/12 minbase, built once through the daemon (from the Debian
mirror, with the package cache of /var/cache/cumulo/debs). Then, interleaved:

- export: ``Client.export_image`` to a file (daemon runs tar -cz, streams it over
  the unix socket) vs ``tar -czf FILE --numeric-owner -C rootfs .`` by hand;
- import: ``Client.import_image`` of that tar.gz (upload hashed on the way, tar
  -x, tree hash, dedup against the image already there, staging removed) vs
  ``tar -xzf FILE -C DIR`` + ``rm -rf DIR`` by hand.

    flock /tmp/cumulo-heavy.lock .venv/bin/python -m bench.images [--repeat 3]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from bench.daemon import bench_daemon
from cumulo.client import Client


def _export_ours(c: Client, out: Path) -> None:
    with out.open("wb") as f:
        for _fmt, chunk in c.export_image("debian/12"):
            f.write(chunk)


def _export_raw(rootfs: Path, out: Path) -> None:
    subprocess.run(["tar", "-czf", str(out), "--numeric-owner", "--xattrs", "-C", str(rootfs),
                    "."], check=True)


def _import_ours(c: Client, tarball: Path) -> None:
    op = c.import_image(str(tarball), tarball.name, "again")
    c.wait(op, timeout=1800)


def _import_raw(tarball: Path, into: Path) -> None:
    into.mkdir()
    subprocess.run(["tar", "-xzf", str(tarball), "-C", str(into), "--numeric-owner",
                    "--same-owner", "--same-permissions", "--xattrs", "--xattrs-include=*"],
                   check=True)
    shutil.rmtree(into)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cumulo-bench-images-"))
    times: dict[str, list[float]] = {k: [] for k in ("export ours", "export raw",
                                                     "import ours", "import raw")}
    try:
        with bench_daemon() as (c, state, _parent):
            t0 = time.perf_counter()
            op = c.build_image("debian/12", wait=False)
            c.wait(op, timeout=1800)
            build = time.perf_counter() - t0
            img = c.image("debian/12")
            rootfs = state / "images" / img["fingerprint"] / "rootfs"
            print(f"built debian/12 in {build:.1f} s: {img['size'] / 2**20:.1f} MiB tree")
            for i in range(args.repeat):
                ours, raw = work / f"ours-{i}.tar.gz", work / f"raw-{i}.tar.gz"
                steps: list[tuple[str, Callable[[], None]]] = [
                    ("export ours", partial(_export_ours, c, ours)),
                    ("export raw", partial(_export_raw, rootfs, raw)),
                    ("import ours", partial(_import_ours, c, ours)),
                    ("import raw", partial(_import_raw, ours, work / "x"))]
                for key, fn in steps:
                    t = time.perf_counter()
                    fn()
                    times[key].append(time.perf_counter() - t)
                print(f"run {i + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()))
            size = (work / "ours-0.tar.gz").stat().st_size
            print(f"tar.gz: {size / 2**20:.1f} MiB ours, "
                  f"{(work / 'raw-0.tar.gz').stat().st_size / 2**20:.1f} MiB raw")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for what in ("export", "import"):
        o, r = statistics.median(times[f"{what} ours"]), statistics.median(times[f"{what} raw"])
        print(f"{what}: ours {o:.2f} s, raw tar {r:.2f} s, ratio {o / r:.2f}x "
              f"(median of {args.repeat})")


if __name__ == "__main__":
    main()
