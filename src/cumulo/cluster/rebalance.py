"""Rebalancing: a bounded list of moves that lowers the cluster's imbalance the most.

The imbalance score is the standard deviation of the online members' declared memory
use as a fraction of their capacity (0: perfectly even). ``plan`` is greedy, as
Ganeti's hbal: each step takes the one move (an instance from one of the fullest
members to one of the emptiest) that lowers the score the most, applies it to its
model of the cluster, and goes on until ``max_moves`` or until the best move gains
less than ``min_gain``. Biggest gains first means few moves: one large instance moves
rather than several small ones. Each instance moves at most once.

Placement groups are respected: instances of a ``compact`` group stay where they are;
an instance of a ``spread`` group goes only where its group has fewer instances than
where it leaves (strict: none). Moves never overcommit a destination. Pure code: the
daemon carries the moves out by live migration; ``bench/scheduler.py`` runs it too.

An instance launched without ``--memory`` declares none, but it uses some: ``weighed``
counts it at the default memory of its type (a VM's QEMU default; a container, which
has no default, at ``CONTAINER_WEIGHT``), on its member too, so that a member full of
such instances is not seen as empty.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from cumulo.cluster.model import COMPACT, ONLINE, Member, PlacementGroup, Resources


@dataclass(frozen=True)
class Placed:
    """An instance where it runs now, with what it declares."""

    name: str
    member: str
    resources: Resources
    placement_group: PlacementGroup | None = None


@dataclass(frozen=True)
class Move:
    instance: str
    source: str
    target: str
    score_after: float


@dataclass(frozen=True)
class Plan:
    before: float
    after: float
    moves: list[Move] = field(default_factory=list)

    def describe(self) -> list[str]:
        """The dry-run: one line per move, and the score before and after."""
        lines = [f"move {m.instance} from {m.source} to {m.target} (score then"
                 f" {m.score_after:.4f})" for m in self.moves]
        return [*lines, f"imbalance {self.before:.4f} -> {self.after:.4f} with"
                        f" {len(self.moves)} move(s)"]


CONTAINER_WEIGHT = 64 << 20   # a container without --memory: a small service's resident size


def weighed(members: Sequence[Member], instances: Sequence[Placed],
            types: Mapping[str, str], defaults: Mapping[str, int]
            ) -> tuple[list[Member], list[Placed]]:
    """``members`` and ``instances`` with each instance that declares no memory counted
    at ``defaults[its type]`` (``types``: instance -> type; unknown ones weigh 0)."""
    extra: dict[str, int] = defaultdict(int)
    out = []
    for p in instances:
        weight = defaults.get(types.get(p.name, ""), 0) if p.resources.memory == 0 else 0
        if weight:
            p = replace(p, resources=replace(p.resources, memory=weight))
            extra[p.member] += weight
        out.append(p)
    return [replace(m, used=replace(m.used, memory=m.used.memory + extra[m.name]))
            if extra.get(m.name) else m for m in members], out


def score(members: Sequence[Member]) -> float:
    """The imbalance: standard deviation of the online members' memory use fraction."""
    u = [m.used.memory / max(m.capacity.memory, 1) for m in members if m.state == ONLINE]
    if not u:
        return 0.0
    mean = sum(u) / len(u)
    return math.sqrt(max(sum(x * x for x in u) / len(u) - mean * mean, 0.0))


class _Model:
    """The online members' usage, updated as moves are planned; keeps Σu and Σu²."""

    def __init__(self, members: Sequence[Member], instances: Sequence[Placed]) -> None:
        online = [m for m in members if m.state == ONLINE]
        self.cap = {m.name: m.capacity for m in online}
        self.used = {m.name: m.used for m in online}
        self.n = len(online)
        u = [self.util(m) for m in self.cap]
        self.s1, self.s2 = sum(u), sum(x * x for x in u)
        self.on: dict[str, list[Placed]] = defaultdict(list)
        self.groups: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for p in instances:
            if p.member in self.cap:
                self.on[p.member].append(p)
            if p.placement_group is not None:
                self.groups[p.placement_group.name][p.member] += 1

    def util(self, member: str, delta: int = 0) -> float:
        return (self.used[member].memory + delta) / max(self.cap[member].memory, 1)

    def std(self, s1: float, s2: float) -> float:
        mean = s1 / self.n
        return math.sqrt(max(s2 / self.n - mean * mean, 0.0))

    def after(self, p: Placed, target: str) -> tuple[float, float]:
        """Σu and Σu² if ``p`` moved to ``target``."""
        m = p.resources.memory
        us, ut = self.util(p.member), self.util(target)
        us2, ut2 = self.util(p.member, -m), self.util(target, m)
        return (self.s1 - us - ut + us2 + ut2,
                self.s2 - us * us - ut * ut + us2 * us2 + ut2 * ut2)

    def allowed(self, p: Placed, target: str) -> bool:
        free = self.cap[target] - self.used[target]
        if not p.resources.fits_in(free):
            return False
        pg = p.placement_group
        if pg is None:
            return True
        counts = self.groups[pg.name]
        if pg.strict:
            return counts[target] == 0
        return counts[target] + 1 < counts[p.member]   # the group ends no less spread

    def apply(self, p: Placed, target: str) -> Placed:
        self.s1, self.s2 = self.after(p, target)
        self.used[p.member] = self.used[p.member] - p.resources
        self.used[target] = self.used[target] + p.resources
        self.on[p.member].remove(p)
        moved = Placed(p.name, target, p.resources, p.placement_group)
        self.on[target].append(moved)
        if p.placement_group is not None:
            self.groups[p.placement_group.name][p.member] -= 1
            self.groups[p.placement_group.name][target] += 1
        return moved


def plan(members: Sequence[Member], instances: Sequence[Placed], max_moves: int = 10,
         min_gain: float = 1e-3, width: int = 8) -> Plan:
    """The moves, best first; ``width``: how many of the fullest members give and of
    the emptiest members take at each step (bounds the cost at 10,000 members)."""
    model = _Model(members, instances)
    if model.n < 2:
        return Plan(0.0, 0.0)
    current = before = model.std(model.s1, model.s2)
    moves: list[Move] = []
    moved: set[str] = set()
    while len(moves) < max_moves:
        names = list(model.cap)
        fullest = heapq.nlargest(width, names, key=model.util)
        emptiest = heapq.nsmallest(width, names, key=model.util)
        best: tuple[float, Placed, str] | None = None
        for source in fullest:
            seen: set[tuple[Resources, str | None]] = set()
            for p in model.on[source]:
                pg = p.placement_group
                kind = (p.resources, None if pg is None else pg.name)
                if p.name in moved or kind in seen or (pg is not None and pg.policy ==
                                                       COMPACT):
                    continue
                seen.add(kind)   # instances alike are interchangeable: try one of them
                for target in emptiest:
                    if target == source or not model.allowed(p, target):
                        continue
                    s = model.std(*model.after(p, target))
                    if best is None or s < best[0]:
                        best = (s, p, target)
        if best is None or current - best[0] < min_gain:
            break
        s, p, target = best
        model.apply(p, target)
        moved.add(p.name)
        moves.append(Move(p.name, p.member, target, s))
        current = s
    return Plan(before, current, moves)
