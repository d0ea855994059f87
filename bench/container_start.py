"""Container start cost: `cumulo launch` + first exec against raw runc and podman.

Raw path: `runc run -d` + `runc exec` on the very config.json (namespaces, user
namespace, cgroups, seccomp) our driver generated, each container on a fresh overlay
of the image's (uid-shifted) tree mounted for it, as ours gets one; so the difference
is what Cumulo adds: API, store, conmon. (``raw, shared root`` runs every container on
the warm-up instance's overlay, as this bench did before: no mount, and a root whose
files are already cached.)

The CLI side is timed in parts: ``cumulo launch`` and ``cumulo exec``, both through
the fast path (``cumulo.cli.fast``, the default) and through the full typer CLI
(``CUMULO_CLI_FAST=0``), taking turns at going first; and in each round ``python -c
pass`` (the interpreter's start) and ``python -c "import typer"`` (the start of any typer
CLI). ``CLI floor`` is the API's time plus two interpreter starts: what the CLI would take
if it cost nothing beyond Python's start; ``full floor`` the same with typer imported.

Peer: `podman run -d` + `podman exec` (Debian's podman, on runc and conmon too)
on the same uid-shifted busybox tree (as an overlay, ``--rootfs DIR:O``), the same
command, id map and open-file limit, no network; its storage lives in a temp dir.

Also: containers created per second (N in a row) and host memory per idle
container (PSS of its monitor and its processes).

``--before REF`` adds the API of the cumulod of git commit REF (its ``src/`` unpacked,
run by this interpreter in a bench daemon of its own) to the same rounds.

    .venv/bin/python -m bench.container_start [--repeat 10] [--density 50] [--before REF]
                                              [--api-only]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psutil

from bench import cgroup_attach
from bench.daemon import BIN, bench_daemon, daemon_of, unpack
from cumulo.client import Client
from cumulo.host import cgroups, mounts


def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def ours_api(c: Client, name: str) -> None:
    c.create(name, "busybox", start=True)
    r = c.exec(name, ["true"])
    assert r["exit_code"] == 0, r


def cli(sock: str, *args: str, fast: str = "1") -> None:
    """``cumulo ARGS``; ``fast="0"``: through the full (typer) CLI, not the fast path."""
    env = {"CUMULO_SOCKET": sock, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
           "CUMULO_CLI_FAST": fast}
    subprocess.run([str(BIN / "cumulo"), *args], env=env, check=True, capture_output=True)


def import_typer() -> None:
    subprocess.run([sys.executable, "-c", "import typer"], check=True)


def python_start() -> None:
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def raw_bundle(state: Path, template: str, parent: str, work: Path) -> Path:
    """A bundle with our generated config, its own id and cgroup, on the same rootfs."""
    inst = state / "instances" / template
    cfg = json.loads((inst / "config.json").read_text())
    if not Path(cfg["root"]["path"]).is_absolute():
        cfg["root"]["path"] = str(inst / cfg["root"]["path"])
    bundle = work / "bundle"
    bundle.mkdir(parents=True)
    cfg["linux"]["cgroupsPath"] = f"/{parent}/raw"
    cfg["process"]["terminal"] = False
    (bundle / "config.json").write_text(json.dumps(cfg))
    return bundle


def peer_root(state: Path, c: Client) -> Path:
    """The tree our container's overlay lies on: the image's (uid-shifted) rootfs."""
    images = state / "images" / c.instance("warmup")["image"]
    shifted = sorted(images.glob("rootfs.idmap-*"))
    return shifted[0] if shifted else images / "rootfs"


def fresh_root(bundle: Path, lower: Path, cid: str) -> Path:
    """A bundle of its own for ``cid``: the config, on a fresh overlay of ``lower``
    (mounted as our driver mounts a container's root: mount(2), upper owned by the
    container's root user)."""
    cfg = json.loads((bundle / "config.json").read_text())
    own = bundle.parent / cid
    upper, work, merged = own / "upper", own / "work", own / "rootfs"
    for d in (upper, work, merged):
        d.mkdir(parents=True)
    owner = lower.stat().st_uid
    os.chown(upper, owner, owner)
    mounts.overlay(lower, upper, work, merged)
    cfg["root"]["path"] = str(merged)
    (own / "config.json").write_text(json.dumps(cfg))
    return own


def raw_runc(root: Path, bundle: Path, cid: str, lower: Path | None = None) -> None:
    """``runc run -d`` + ``runc exec``; with ``lower``, on a fresh overlay of it."""
    if lower is not None:
        bundle = fresh_root(bundle, lower, cid)
    runc = shutil.which("runc") or "runc"
    # (stderr to a file: PID 1 inherits it, a pipe would stay open while it runs)
    with open(root.parent / f"{cid}.err", "w+b") as err:
        if subprocess.run([runc, "--root", str(root), "run", "-d", "-b", str(bundle), cid],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=err).returncode != 0:
            err.seek(0)
            raise RuntimeError(f"runc run {cid}: {err.read().decode(errors='replace')}")
    subprocess.run([runc, "--root", str(root), "exec", cid, "true"], check=True)


class Podman:
    """podman with its own storage, run root and cgroup parent, all removed at the end."""

    def __init__(self, work: Path, parent: str, cfg: dict[str, Any], lower: Path) -> None:
        self.base = [shutil.which("podman") or "podman", "--root", str(work / "root"),
                     "--runroot", str(work / "run"), "--cgroup-manager", "cgroupfs",
                     "--events-backend", "none", "--runtime", "runc",
                     "--network-backend", "netavark", "--log-level", "error"]
        self.cgroup = f"/{parent}/podman"
        # (podman 4.3 drops the --ulimit options that come after --rootfs: it goes last)
        self.run_args = ["--network", "none", "--cgroup-parent", self.cgroup,
                         "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
        for m in cfg["linux"].get("uidMappings", []):   # the same user namespace as ours
            idmap = f"{m['containerID']}:{m['hostID']}:{m['size']}"
            self.run_args += ["--uidmap", idmap, "--gidmap", idmap]
        self.run_args += ["--rootfs", f"{lower}:O"]   # an overlay: the tree stays as it is
        self.command = cfg["process"]["args"]

    def run(self, name: str) -> None:
        proc = subprocess.run([*self.base, "run", "-d", "--name", name, *self.run_args,
                               *self.command], capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"podman run failed: {proc.stderr.strip()}")
        subprocess.run([*self.base, "exec", name, "true"], check=True)

    def remove(self, name: str) -> None:
        subprocess.run([*self.base, "rm", "-f", "-t", "0", name], capture_output=True)

    def close(self) -> None:
        subprocess.run([*self.base, "system", "reset", "-f"], capture_output=True)


def raw_cleanup(root: Path, cid: str) -> None:
    subprocess.run([shutil.which("runc") or "runc", "--root", str(root), "delete", "-f", cid],
                   capture_output=True)
    (root.parent / f"{cid}.err").unlink(missing_ok=True)
    own = root.parent / cid   # fresh_root's (next to the bundle), if it made one
    if own.exists():
        mounts.umount(own / "rootfs")
        shutil.rmtree(own)


def idle_pss(pid: int) -> int:
    """PSS of the container's processes plus its conmon (the parent of PID 1)."""
    total = 0
    try:
        init = psutil.Process(pid)
        procs = [init, *init.children(recursive=True)]
        if init.parent() is not None:
            procs.append(init.parent())
        for p in procs:
            total += p.memory_full_info().pss
    except psutil.Error:
        pass
    return total


def summary(xs: list[float]) -> str:
    med = statistics.median(xs)
    spread = (max(xs) - min(xs)) / 2
    return f"{med * 1000:7.1f} ms (±{spread * 1000:.1f}, n={len(xs)})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--density", type=int, default=50, help="idle containers to start")
    ap.add_argument("--api-only", action="store_true", help="only raw runc and the API"
                    " (and --before's): shorter rounds, so more of them on a busy machine")
    ap.add_argument("--before", metavar="REF", help="also the API of the cumulod of this git"
                    " commit (its own bench daemon), in the same rounds")
    args = ap.parse_args()
    results: dict[str, Any] = {}
    with ExitStack() as stack:
        c, state, parent = stack.enter_context(bench_daemon())
        before = None
        if args.before:
            src = unpack(args.before, stack.enter_context(
                tempfile.TemporaryDirectory(prefix="cumulo-before-")))
            before, _, _ = stack.enter_context(bench_daemon(wrapper=daemon_of(src)))
            before.build_image("busybox")
            ours_api(before, "warmup")
        c.build_image("busybox")
        ours_api(c, "warmup")
        moved = cgroup_attach.attach_after_idle(parent)
        results["cgroup_move_after_idle_s"] = moved
        sides = ("raw", "raw_shared", "api", "api_before", "cli_launch", "cli_exec",
                 "full_launch", "full_exec", "typer", "python", "podman")
        times: dict[str, list[float]] = {side: [] for side in sides}
        work = Path(tempfile.mkdtemp(prefix="raw-runc-"))
        # the raw containers' root user (an id map's) walks down to its overlay (podman's
        # set-up used to open this up for it as a side effect)
        os.chmod(work, 0o711)
        podman = None
        sock = str(c.socket)
        try:
            bundle = raw_bundle(state, "default_warmup", parent, work)
            lower = peer_root(state, c)
            if shutil.which("podman") and not args.api_only:
                podman = Podman(work / "podman", parent, json.loads(
                    (bundle / "config.json").read_text()), lower)
                podman.run("pwarmup")   # its storage is set up at the first run
                podman.remove("pwarmup")
            for i in range(args.repeat):  # interleaved, so drift hits all sides alike
                times["raw"].append(timed(lambda i=i: raw_runc(work / "root", bundle,
                                                               f"raw{i}", lower)))
                raw_cleanup(work / "root", f"raw{i}")
                daemons = [("api", c, "api"), ("api_before", before, "b")]
                for side, client, prefix in daemons[::1 if i % 2 else -1]:  # turn about
                    if client is not None:
                        times[side].append(timed(lambda i=i, client=client, prefix=prefix:
                                                 ours_api(client, f"{prefix}{i}")))
                        client.delete(f"{prefix}{i}", force=True)
                if args.api_only:
                    continue
                times["raw_shared"].append(timed(lambda i=i: raw_runc(work / "root", bundle,
                                                                      f"rawsh{i}")))
                raw_cleanup(work / "root", f"rawsh{i}")
                paths = [("cli", "1"), ("full", "0")]   # the fast path, the full CLI
                for side, fast in paths[::1 if i % 2 else -1]:   # turn about
                    times[f"{side}_launch"].append(timed(lambda i=i, side=side, fast=fast: cli(
                        sock, "launch", "busybox", f"{side}{i}", fast=fast)))
                    times[f"{side}_exec"].append(timed(lambda i=i, side=side, fast=fast: cli(
                        sock, "exec", f"{side}{i}", "--", "true", fast=fast)))
                    c.delete(f"{side}{i}", force=True)
                times["typer"].append(timed(import_typer))
                times["python"].append(timed(python_start))
                if podman is not None:
                    times["podman"].append(timed(lambda i=i: podman.run(f"p{i}")))
                    podman.remove(f"p{i}")
        finally:
            if podman is not None:
                podman.close()
            for left in work.glob("*/rootfs"):   # a raw side that failed half-way
                if left.is_mount():
                    subprocess.run([shutil.which("runc") or "runc", "--root",
                                    str(work / "root"), "delete", "-f", left.parent.name],
                                   capture_output=True)
                    mounts.umount(left)
            shutil.rmtree(work, ignore_errors=True)
            for side in ("raw", "podman"):   # a conmon may take a moment to leave
                left = cgroups.remove(f"/{parent}/{side}", wait=5.0)
                if left:
                    print(f"cgroups left behind: {', '.join(left)}", file=sys.stderr)
        c.delete("warmup", force=True)
        for side in ("cli", "full"):
            times[side] = [a + b for a, b in zip(times[f"{side}_launch"], times[f"{side}_exec"],
                                                 strict=True)]
        for floor, start in (("cli_floor", "python"), ("full_floor", "typer")):
            times[floor] = [a + 2 * t for a, t in zip(times["api"], times[start], strict=True)
                            ] if times[start] else []
        raw_med = statistics.median(times["raw"])
        print(cgroup_attach.describe(moved))
        print("launch + first exec (median, ± half range; ratios to raw runc on a fresh root:"
              " of the medians, and the medians of the per-round ratios and differences):")
        print(f"  raw runc run -d + exec : {summary(times['raw'])}")
        for side, label in (("raw_shared", "raw, shared root"), ("api", "cumulo API"),
                            ("api_before", f"API of {args.before}"),
                            ("cli", "cumulo CLI"), ("cli_launch", "  cumulo launch"),
                            ("cli_exec", "  cumulo exec -- true"),
                            ("full", "full CLI (FAST=0)"), ("full_launch", "  cumulo launch"),
                            ("full_exec", "  cumulo exec -- true"),
                            ("python", 'python -c "pass"'),
                            ("typer", 'python -c "import typer"'),
                            ("cli_floor", "CLI floor: API + 2 pass"),
                            ("full_floor", "full floor: API + 2 typer"),
                            ("podman", "podman run -d + exec")):
            if times[side]:
                paired = statistics.median(a / b for a, b in zip(times[side], times["raw"],
                                                                 strict=True))
                # (and what it adds to raw runc, per round: steadier than the ratio,
                # which follows the machine's speed of the moment)
                excess = statistics.median(a - b for a, b in zip(times[side], times["raw"],
                                                                 strict=True))
                print(f"  {label:23s}: {summary(times[side])}  "
                      f"ratio {statistics.median(times[side]) / raw_med:.2f}x"
                      f" (per round {paired:.2f}x, {excess * 1000:+.1f} ms)")
        if podman is None and not args.api_only:
            print("  podman                 : not installed (scripts/install.sh installs it)")
        results["launch_exec_s"] = times

        t0 = time.perf_counter()
        for i in range(args.density):
            c.create(f"idle{i}", "busybox", start=True)
        elapsed = time.perf_counter() - t0
        time.sleep(2)
        pss = [idle_pss(c.instance(f"idle{i}")["pid"]) for i in range(args.density)]
        host_used = psutil.virtual_memory().used
        print(f"density: {args.density} containers in {elapsed:.1f}s "
              f"= {args.density / elapsed:.1f} containers/s")
        print(f"idle container host memory (PSS, container + conmon): median "
              f"{statistics.median(pss) / 1024:.0f} KiB; host memory used now "
              f"{host_used / 2**30:.2f} GiB")
        results["density"] = {"n": args.density, "seconds": elapsed, "pss_bytes": pss}
    out = Path("bench/results/container_start.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1))
    print(f"raw samples in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
