"""The docker CLI through Cumulo's Docker API against raw runc and Podman, side by side.

Two workloads, each repeated, the sides interleaved round by round:

- ``docker run --rm busybox true``: create, attach, start, wait, remove;
- ``docker run -d busybox sleep`` + ``docker exec true``.

Raw: ``runc run`` (foreground) + ``runc delete`` and ``runc run -d`` + ``runc exec`` on the very
config.json and root our driver generated (bench/container_start.py's bundle).
Peer: Debian's ``podman run --rm`` and ``podman run -d`` + ``podman exec`` on the same
tree, id map and limits (its storage in a temp dir). Reported as ratios to raw runc.

    .venv/bin/python -m bench.docker_api [--repeat 10]
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
from pathlib import Path
from typing import Any

from bench.container_start import Podman, peer_root, raw_bundle, raw_cleanup, summary, timed
from bench.daemon import bench_daemon
from cumulo.host import cgroups

SLEEP = ["sleep", "300"]


class DockerCli:
    def __init__(self, sock: Path, config: Path) -> None:
        self.env = {**os.environ, "DOCKER_HOST": f"unix://{sock}", "DOCKER_CONFIG": str(config)}

    def __call__(self, *args: str) -> str:
        r = subprocess.run(["docker", *args], capture_output=True, text=True, env=self.env)
        if r.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout


def runc(root: Path, *args: str) -> None:
    subprocess.run([shutil.which("runc") or "runc", "--root", str(root), *args], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def podman_rm_run(p: Podman, name: str) -> None:
    subprocess.run([*p.base, "run", "--rm", "--name", name, *p.run_args, "true"], check=True,
                   capture_output=True)


def podman_exec(p: Podman, name: str) -> None:
    subprocess.run([*p.base, "run", "-d", "--name", name, *p.run_args, *SLEEP], check=True,
                   capture_output=True)
    subprocess.run([*p.base, "exec", name, "true"], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=10)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="docker-bench-"))
    sock = work / "docker.sock"
    (work / "docker-config").mkdir()
    docker = DockerCli(sock, work / "docker-config")
    sides = ("raw", "cumulo", "podman")
    times: dict[str, dict[str, list[float]]] = {w: {s: [] for s in sides}
                                                for w in ("run_rm", "run_d_exec")}
    podman = None
    with bench_daemon(extra=["--docker-socket", str(sock)]) as (c, state, parent):
        c.build_image("busybox")            # a Cumulo image: Docker sees busybox:latest
        docker("run", "-d", "--name", "warmup", "busybox", *SLEEP)
        try:
            bundle = raw_bundle(state, "default_warmup", parent, work)
            cfg = json.loads((bundle / "config.json").read_text())
            run_cfg = dict(cfg, process={**cfg["process"], "args": ["true"]})
            run_bundle = work / "run-bundle"
            run_bundle.mkdir()
            (run_bundle / "config.json").write_text(json.dumps(run_cfg))
            if shutil.which("podman"):
                podman = Podman(work / "podman", parent, cfg, peer_root(state, c))
                podman.run("pwarmup")
                podman.remove("pwarmup")
            root = work / "runc-root"
            for i in range(args.repeat):   # interleaved: drift hits every side alike
                t = times["run_rm"]

                def raw_rm(i: int = i) -> None:   # --rm: the removal counts, as for the others
                    runc(root, "run", "-b", str(run_bundle), f"rr{i}")
                    raw_cleanup(root, f"rr{i}")

                t["raw"].append(timed(raw_rm))
                t["cumulo"].append(timed(lambda: docker("run", "--rm", "busybox", "true")))
                if podman is not None:
                    t["podman"].append(timed(lambda i=i: podman_rm_run(podman, f"pr{i}")))
                t = times["run_d_exec"]

                def raw_exec(i: int = i) -> None:
                    runc(root, "run", "-d", "-b", str(bundle), f"rd{i}")
                    runc(root, "exec", f"rd{i}", "true")

                t["raw"].append(timed(raw_exec))
                raw_cleanup(root, f"rd{i}")

                def ours_exec(i: int = i) -> None:
                    docker("run", "-d", "--name", f"d{i}", "busybox", *SLEEP)
                    docker("exec", f"d{i}", "true")

                t["cumulo"].append(timed(ours_exec))
                docker("rm", "-f", f"d{i}")
                if podman is not None:
                    t["podman"].append(timed(lambda i=i: podman_exec(podman, f"pd{i}")))
                    podman.remove(f"pd{i}")
        finally:
            docker("rm", "-f", "warmup")
            if podman is not None:
                podman.close()
            for side in ("raw", "podman", ""):   # then the parent: no instance is left
                left = cgroups.remove(f"/{parent}/{side}".rstrip("/"), wait=5.0)
                if left:
                    print(f"cgroups left behind: {', '.join(left)}", file=sys.stderr)
            shutil.rmtree(work, ignore_errors=True)
    labels = {"run_rm": ("docker run --rm busybox true", "runc run", "podman run --rm"),
              "run_d_exec": ("docker run -d + docker exec", "runc run -d + exec",
                             "podman run -d + exec")}
    for workload, t in times.items():
        ours, raw, peer = labels[workload]
        raw_med = statistics.median(t["raw"])
        print(f"{ours} (median, ± half range):")
        print(f"  raw {raw:24s}: {summary(t['raw'])}")
        print(f"  cumulo {ours:21s}: {summary(t['cumulo'])}  ratio "
              f"{statistics.median(t['cumulo']) / raw_med:.2f}x")
        if t["podman"]:
            print(f"  {peer:28s}: {summary(t['podman'])}  ratio "
                  f"{statistics.median(t['podman']) / raw_med:.2f}x; cumulo/podman "
                  f"{statistics.median(t['cumulo']) / statistics.median(t['podman']):.2f}x")
        else:
            print("  podman: not installed (scripts/install.sh installs it)")
    out = Path("bench/results/docker_api.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"repeat": args.repeat, "seconds": times}
    out.write_text(json.dumps(results, indent=1))
    print(f"raw samples in {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
