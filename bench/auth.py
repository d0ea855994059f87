"""What authentication costs: a read and a launch over HTTPS with a bearer token against
the same over the unix socket (root's door: no TLS, no token lookup), side by side on
one daemon, interleaved, as ratios.

Each request is a new connection, as the CLI makes them: over HTTPS that is a TLS
handshake (ECDSA P-256, TLS 1.3), then the token's lookup (one indexed SELECT) and the
authorization against the rights table; a launch is also written to the audit log (so
is it over the socket).

    .venv/bin/python -m bench.auth [--reads 300] [--launches 10] [--fake]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import time
from collections.abc import Callable

from bench.daemon import bench_daemon
from cumulo.client import Client


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def spread(xs: list[float]) -> str:
    med = statistics.median(xs)
    return f"{med * 1000:7.2f} ms (± {(max(xs) - min(xs)) / 2 * 1000:.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reads", type=int, default=300)
    ap.add_argument("--launches", type=int, default=10)
    ap.add_argument("--fake", action="store_true",
                    help="the fake container driver: the API's own cost only")
    args = ap.parse_args()
    port = free_port()
    extra = ["--listen", f"127.0.0.1:{port}"]
    if args.fake:
        extra += ["--driver", "container=fake"]
    with bench_daemon(extra=extra) as (local, _state, _parent):
        local.request("POST", "/images", json={"builder": "busybox", "alias": "busybox"})
        for _ in range(600):
            if any("busybox" in i.get("aliases", []) for i in local.get("/images")):
                break
            time.sleep(0.2)
        token = local.create_identity("bench", "operator", "default")["token"]
        fp = local.server()["certificate_fingerprint"]
        remote = Client(url=f"https://127.0.0.1:{port}", token=token, fingerprint=fp,
                        timeout=120)
        sides = {"unix socket": local, "https+token": remote}
        reads: dict[str, list[float]] = {k: [] for k in sides}
        # a new connection for each request, as a CLI command makes (the client would
        # keep one between requests): c.close() drops the kept one, outside the timing
        for _ in range(args.reads):   # interleaved: the machine's noise hits both
            for side, c in sides.items():
                c.close()
                reads[side].append(timed(lambda c=c: c.instances()))
        launches: dict[str, list[float]] = {k: [] for k in sides}
        for i in range(args.launches):
            for side, c in sides.items():
                name = f"b{i}-{'u' if c is local else 'h'}"
                c.close()
                launches[side].append(timed(lambda c=c, n=name: c.create(n, "busybox",
                                                                          start=True)))
                local.delete(name, force=True)
        base_r, base_l = (statistics.median(reads["unix socket"]),
                          statistics.median(launches["unix socket"]))
        print(f"driver: {'fake' if args.fake else 'container (runc)'};"
              f" {args.reads} reads, {args.launches} launches each, interleaved")
        for side in sides:
            print(f"  {side:12s} read (GET /instances) {spread(reads[side])}"
                  f"  ratio {statistics.median(reads[side]) / base_r:.2f}x")
        for side in sides:
            print(f"  {side:12s} launch               {spread(launches[side])}"
                  f"  ratio {statistics.median(launches[side]) / base_l:.2f}x")


if __name__ == "__main__":
    main()
