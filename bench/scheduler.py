"""The scheduler at scale: the real placement code (cumulo.cluster) against a synthetic
inventory, side by side in one run.

1. growth: placements per second at 100, 1,000 and 10,000 members (100 instances per
   member), with sampling (Kubernetes' rule) and scoring every feasible member; the
   10,000-member run places 1,000,000 instances and reports the imbalance after;
2. evacuation: the fullest member is evacuated (its instances placed elsewhere), then
   restored empty; the rebalancer's moves to recover, against moving every evacuated
   instance back (what a plain restore does);
3. the allocation transaction: allocations per second through the store (member row
   locked, re-checked, committed) on a throwaway PostgreSQL server (as tests/pg.py)
   and on a SQLite file, 1 and 8 threads, against the in-memory placement rate.

The inventory: members of 3 sizes (128/256/512 CPUs, 256/512/1024 GiB), 5 % aarch64,
90 % with kvm, in 20 racks (groups); instances of 0.5-16 GiB, 10 % need kvm, 1 % in
strict spread placement groups of 3.

    .venv/bin/python -m bench.scheduler [--members 100,1000,10000] [--per-member 100]
        [--db-members 10000] [--db-allocations 4000] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from cumulo.cluster import rebalance
from cumulo.cluster.placement import (
    EVACUATED,
    ONLINE,
    Inventory,
    Member,
    PlacementGroup,
    Request,
    Resources,
)

GiB = 1 << 30
SIZES = [(0.5, GiB // 2), (1, GiB), (2, 2 * GiB), (2, 4 * GiB), (4, 8 * GiB), (8, 16 * GiB)]
WEIGHTS = [20, 30, 25, 15, 7, 3]


def members(n: int, seed: int = 1) -> list[Member]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        k = rnd.choice((1, 2, 4))
        out.append(Member(
            name=f"m{i:05}", capacity=Resources(128 * k, 256 * k * GiB, 4 * k << 40),
            architecture="aarch64" if rnd.random() < 0.05 else "x86_64",
            features=frozenset({"kvm", "criu"} if rnd.random() < 0.9 else {"criu"}),
            groups=frozenset({f"rack{i % 20}"})))
    return out


def requests(count: int, seed: int = 2) -> list[Request]:
    rnd = random.Random(seed)
    kinds = rnd.choices(range(len(SIZES)), WEIGHTS, k=count)
    out = []
    for i, k in enumerate(kinds):
        cpus, mem = SIZES[k]
        vm = rnd.random() < 0.1
        pg = PlacementGroup(f"svc{i // 300}", strict=True) if i % 300 < 3 else None
        out.append(Request(Resources(cpus, mem, 20 * GiB), type="vm" if vm else "container",
                           architecture="x86_64" if vm else None,
                           features=frozenset({"kvm"}) if vm else frozenset(),
                           placement_group=pg))
    return out


def place_all(inv: Inventory, reqs: list[Request]) -> tuple[float, list[str]]:
    """Seconds to place ``reqs`` one by one, and where each went."""
    where: list[str] = []
    t = time.perf_counter()
    for r in reqs:
        where.append(inv.place(r))
    return time.perf_counter() - t, where


def growth(sizes: list[int], per_member: int, full_sample: int) -> tuple[list[dict[str, Any]],
                                                                        Any]:
    rows, last = [], None
    for n in sizes:
        reqs = requests(n * per_member)
        inv = Inventory(members(n))
        secs, where = place_all(inv, reqs)
        full = Inventory(members(n), percentage=100)
        k = min(full_sample, len(reqs))
        full_secs, _ = place_all(full, reqs[:k])
        row = {"members": n, "instances": len(reqs), "placements_per_s": len(reqs) / secs,
               "us_per_placement": secs / len(reqs) * 1e6,
               "full_scoring_per_s": k / full_secs, "imbalance": inv.imbalance()}
        rows.append(row)
        print(f"{n:>6} members, {len(reqs):>9,} instances: {row['placements_per_s']:>8,.0f}"
              f" placements/s sampled ({row['us_per_placement']:.0f} us each),"
              f" {row['full_scoring_per_s']:>7,.0f}/s scoring all (first {k:,});"
              f" imbalance after {row['imbalance']:.4f}", flush=True)
        last = (inv, reqs, where)
    return rows, last


def evacuation(inv: Inventory, reqs: list[Request], where: list[str]) -> dict[str, Any]:
    """Evacuate the fullest member, restore it, and let the rebalancer recover."""
    before = inv.imbalance()
    util = inv.utilisation()
    online = [n for n, s in zip(inv.names, inv.state.tolist(), strict=True)
              if s == inv._states[ONLINE]]
    victim = online[int(util.argmax())]
    mine = [i for i, w in enumerate(where) if w == victim]
    inv.set_state(victim, EVACUATED)
    t = time.perf_counter()
    for i in mine:
        inv.release(victim, reqs[i])
        where[i] = inv.place(reqs[i])
    evac_secs = time.perf_counter() - t
    inv.set_state(victim, ONLINE)   # restored, empty
    restored = inv.imbalance()
    placed = [rebalance.Placed(f"i{i}", w, reqs[i].resources, reqs[i].placement_group)
              for i, w in enumerate(where)]
    snap = inv.snapshot()
    t = time.perf_counter()
    plan = rebalance.plan(snap, placed, max_moves=len(mine) * 2, min_gain=1e-6)
    plan_secs = time.perf_counter() - t
    # moves until the score is back to what it was before the evacuation
    recover = next((k + 1 for k, m in enumerate(plan.moves) if m.score_after <= before),
                   None)
    out = {"member": victim, "evacuated_instances": len(mine), "evacuate_s": evac_secs,
           "imbalance_before": before, "imbalance_restored_empty": restored,
           "rebalance_moves": len(plan.moves), "imbalance_after_rebalance": plan.after,
           "moves_to_recover": recover, "plan_s": plan_secs,
           "recover_vs_plain_restore": (recover or len(plan.moves)) / max(len(mine), 1)}
    print(f"evacuate {victim}: {len(mine)} instances re-placed in {evac_secs * 1e3:.0f} ms;"
          f" restored empty: imbalance {before:.4f} -> {restored:.4f}; rebalancer: back to"
          f" {before:.4f} after {recover} moves (a plain restore moves {len(mine)}: ratio"
          f" {out['recover_vs_plain_restore']:.2f}); {len(plan.moves)} moves in all ->"
          f" {plan.after:.4f}, planned in {plan_secs:.1f} s", flush=True)
    return out


def allocations(url: str, n_members: int, count: int, threads: int) -> float:
    """Allocations per second through the store's transaction (fresh database)."""
    from cumulo.services.placement import Scheduler
    from cumulo.store.members import MemberRecord, MemberStore
    from cumulo.store.repo import Store

    store = Store(url)
    try:
        ms = MemberStore(store.db)
        ms.add_many([MemberRecord(name=m.name, capacity=m.capacity, state=m.state,
                                  features={"arch": m.architecture,
                                            **{f: True for f in m.features}},
                                  groups=m.groups) for m in members(n_members)])
        reqs = [Request(r.resources, r.type, r.architecture, r.features)
                for r in requests(count)]
        sched = Scheduler(ms, max_age=3600)
        sched.inventory()
        per = count // threads

        def run(k: int) -> None:
            for i in range(k * per, (k + 1) * per):
                sched.allocate("default", f"i{i}", reqs[i])

        t = time.perf_counter()
        ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        secs = time.perf_counter() - t
        over = [m.name for m in ms.members() if m.used.memory > m.capacity.memory]
        assert not over, f"overcommitted: {over}"
        return per * threads / secs
    finally:
        store.close()


def db_figures(n_members: int, count: int) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.pg import PgServer, skip_reason

    out: dict[str, Any] = {}
    inv = Inventory(members(n_members))
    secs, _ = place_all(inv, requests(count))
    out["memory_per_s"] = count / secs
    with tempfile.TemporaryDirectory() as d:
        for threads in (1, 8):
            out[f"sqlite {threads} thread(s)"] = allocations(f"sqlite:///{d}/s{threads}.db",
                                                          n_members, count, threads)
    if (reason := skip_reason()) is None:
        server = PgServer().start()
        try:
            for threads in (1, 8):
                url = server.create_database()
                out[f"postgresql {threads} thread(s)"] = allocations(url, n_members, count,
                                                                     threads)
                server.drop_database(url)
        finally:
            server.stop()
    else:
        print(f"PostgreSQL skipped: {reason}")
    mem = out["memory_per_s"]
    print(f"allocation transaction, {n_members:,} members, {count:,} allocations: in memory"
          f" {mem:,.0f}/s; " + "; ".join(
              f"{k} {v:,.0f}/s ({v / mem:.3f}x)"
              for k, v in out.items() if k != "memory_per_s"), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", default="100,1000,10000")
    ap.add_argument("--per-member", type=int, default=100)
    ap.add_argument("--full-sample", type=int, default=20000,
                    help="placements timed when scoring every member")
    ap.add_argument("--db-members", type=int, default=10000)
    ap.add_argument("--db-allocations", type=int, default=4000)
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()
    sizes = [int(x) for x in args.members.split(",")]
    rows, last = growth(sizes, args.per_member, args.full_sample)
    base = rows[0]["us_per_placement"]
    for r in rows:
        r["cost_vs_smallest"] = r["us_per_placement"] / base
    print("cost per placement vs", sizes[0], "members:",
          ", ".join(f"{r['members']}: {r['cost_vs_smallest']:.2f}x" for r in rows))
    inv, reqs, where = last
    evac = evacuation(inv, reqs, where)
    db = db_figures(args.db_members, args.db_allocations)
    if args.json:
        Path(args.json).write_text(json.dumps({"growth": rows, "evacuation": evac,
                                               "allocation": db}, indent=1))


if __name__ == "__main__":
    main()
