"""The daemon's work per launch + exec, counted instead of timed: SQL statements,
transactions that write, worker-thread hand-offs (AnyIO) and operations submitted to the
pool, for ``POST /instances?wait`` + ``POST .../exec`` in process (the unit tests' fake
driver and network, SQLite). Counts do not depend on the machine's load, as times do.

``--before REF`` counts the code of git commit REF too (its ``src/`` and ``tests/`` unpacked).

    .venv/bin/python -m bench.launch_work [--repeat 5] [--before REF]
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def count(root: str, repeat: int) -> dict[str, float]:
    """Counts per launch + exec, with the code under ``root`` (``src/``, ``tests/``)."""
    sys.path[:0] = [f"{root}/src", root]
    import concurrent.futures

    import anyio.to_thread
    from fastapi.testclient import TestClient
    from sqlalchemy import event
    from tests.unit.conftest import fake_services

    from cumulo.api.app import create_app

    counts: collections.Counter[str] = collections.Counter()
    run_sync = anyio.to_thread.run_sync
    submit = concurrent.futures.ThreadPoolExecutor.submit

    async def counted_run_sync(*args: Any, **kwargs: Any) -> Any:
        counts["worker-thread hand-offs"] += 1
        return await run_sync(*args, **kwargs)

    def counted_submit(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts["operations submitted"] += 1
        return submit(self, *args, **kwargs)

    anyio.to_thread.run_sync = counted_run_sync  # type: ignore[assignment]
    concurrent.futures.ThreadPoolExecutor.submit = counted_submit  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp, fake_services(Path(tmp)) as svc:
        engine = svc.store.db.engine

        @event.listens_for(engine, "before_cursor_execute")
        def statement(conn: Any, _cur: Any, sql: str, *_: Any) -> None:
            verb = sql.split(None, 1)[0].upper()
            if verb != "PRAGMA":
                counts["SQL statements"] += 1
                counts[f"SQL {verb}"] += 1
                conn.info["wrote"] = conn.info.get("wrote") or verb in (
                    "INSERT", "UPDATE", "DELETE")

        @event.listens_for(engine, "commit")
        def commit(conn: Any) -> None:
            counts["transactions"] += 1
            counts["transactions that write"] += bool(conn.info.pop("wrote", False))

        with TestClient(create_app(svc)) as api:
            def one(name: str) -> None:
                r = api.post("/1.0/instances", params={"wait": 30}, json={
                    "name": name, "image": "testimg", "start": True})
                assert r.status_code == 202 and r.json()["status"] == "success", r.text
                r = api.post(f"/1.0/instances/{name}/exec", json={"command": ["true"]})
                assert r.status_code == 200 and r.json()["exit_code"] == 0, r.text

            one("warm")
            time.sleep(1)   # the warm-up's queued work done
            counts.clear()
            for i in range(repeat):
                one(f"c{i}")
            time.sleep(1)   # (queued audit records written: they count)
    return {k: v / repeat for k, v in sorted(counts.items())}


def side(root: str, repeat: int) -> dict[str, float]:
    """``count`` in a fresh interpreter (each side imports its own ``cumulo``)."""
    out = subprocess.run([sys.executable, "-m", "bench.launch_work", "--child", root,
                          "--repeat", str(repeat)], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    result: dict[str, float] = json.loads(out.splitlines()[-1])
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--before", metavar="REF", help="also the code of this git commit")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(count(args.child, args.repeat)))
        return
    sides = {"now": side(str(ROOT), args.repeat)}
    with tempfile.TemporaryDirectory() as tmp:
        if args.before:
            archive = subprocess.run(["git", "archive", args.before, "src", "tests"],
                                     cwd=ROOT, capture_output=True, check=True).stdout
            subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
            sides = {args.before: side(tmp, args.repeat), **sides}
    keys = sorted({k for counts in sides.values() for k in counts})
    print(f"per launch (?wait) + exec, mean of {args.repeat}:")
    print(f"  {'':26s}" + "".join(f"{name:>10s}" for name in sides))
    for k in keys:
        print(f"  {k:26s}" + "".join(f"{counts.get(k, 0):10g}" for counts in sides.values()))


if __name__ == "__main__":
    main()
