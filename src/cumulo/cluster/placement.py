"""Where an instance goes: filters, then scores, over an inventory of cluster members.

Pure code (no I/O): the daemon and ``bench/scheduler.py`` run the same functions.

Filters, in this order; a member excluded is counted under the first filter that
excludes it, so that "nobody fits" says which filter excluded how many members:

1. ``--target NAME`` keeps that member only, ``--target @GROUP`` the group's members;
2. state: only ``online`` members (``offline`` and ``evacuated`` are counted apart);
3. architecture, when the request names one;
4. features the instance needs (``kvm``, ``criu``, a runtime ...): all of them;
5. free CPU, memory and disk by declared limits (capacity minus what is declared);
6. placement-group rules: strict spread excludes members that already host an
   instance of the group; strict compact, once the group has instances, keeps only
   the members that host them.

Scores (the best first): the placement group's policy comes first (spread: fewest
instances of the group here; compact: most), then the cluster's strategy: ``spread``
(default: least declared memory use as a fraction of capacity after placing, then
fewest instances) or ``compact`` (the fullest member that still fits: bin packing).

Sampling, as the Kubernetes scheduler does (``percentageOfNodesToScore``): in a large
cluster only a bounded number of feasible members are scored, taken round-robin from
where the last placement stopped, so every member gets its turn: all of them below
100 members, else ``max(100, n * p / 100)`` with ``p = max(5, 50 - n / 125)`` percent.

The inventory keeps one array per attribute (numpy), so a placement among 10,000
members costs a few vectorised passes rather than 10,000 Python calls. The plain data
(``Member``, ``Request`` ...) lives in cluster/model.py and is re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

from cumulo.cluster.model import (
    COMPACT,
    EVACUATED,
    OFFLINE,
    ONLINE,
    POLICIES,
    SPREAD,
    STATES,
    Member,
    NoMemberFits,
    PlacementGroup,
    Request,
    Resources,
)
from cumulo.domain.units import format_size
from cumulo.errors import InvalidInputError, NotFoundError

__all__ = ["COMPACT", "EVACUATED", "OFFLINE", "ONLINE", "POLICIES", "SPREAD", "STATES",
           "Inventory", "Member", "NoMemberFits", "PlacementGroup", "Request", "Resources",
           "sample_size"]

_MAX_BITS = 62   # distinct features (and groups) one inventory can tell apart

Mask = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]


def sample_size(n: int, percentage: float | None = None) -> int:
    """How many feasible members to score among ``n`` (Kubernetes' rule, see above)."""
    if n < 100:
        return n
    pct = percentage if percentage is not None else max(5.0, 50.0 - n / 125)
    return max(100, int(n * pct / 100))


def _verb(n: int, one: str, many: str) -> str:
    return one if n == 1 else many


class _Bits:
    """Names (features, groups) as bits of an int64, so a set test is one AND."""

    def __init__(self) -> None:
        self.bit: dict[str, int] = {}

    def mask(self, names: Iterable[str], add: bool = True) -> int:
        m = 0
        for name in names:
            if name not in self.bit:
                if not add:
                    continue
                if len(self.bit) >= _MAX_BITS:
                    raise InvalidInputError(f"more than {_MAX_BITS} distinct names: {name!r}")
                self.bit[name] = 1 << len(self.bit)
            m |= self.bit[name]
        return m


class Inventory:
    """The members as arrays; ``candidates`` places, ``record``/``release`` keep the
    declared usage current between placements (as the allocation commits them)."""

    def __init__(self, members: Iterable[Member] = (), *, strategy: str = SPREAD,
                 percentage: float | None = None) -> None:
        if strategy not in POLICIES:
            raise InvalidInputError(f"unknown strategy {strategy!r}: use spread or compact")
        self.strategy, self.percentage = strategy, percentage
        self.names: list[str] = []
        self.index: dict[str, int] = {}
        self._features, self._groups = _Bits(), _Bits()
        self._archs: dict[str, int] = {}
        self._states = {s: i for i, s in enumerate(STATES)}
        self.state: Ints = np.zeros(0, np.int64)
        self.arch: Ints = np.zeros(0, np.int64)
        self.feat: Ints = np.zeros(0, np.int64)
        self.group: Ints = np.zeros(0, np.int64)
        self.cap: Floats = np.zeros((3, 0))     # rows: cpus, memory, disk
        self.used: Floats = np.zeros((3, 0))
        self.free: Floats = np.zeros((3, 0))    # cap - used, kept current
        self.count: Ints = np.zeros(0, np.int64)
        self.pg: dict[str, dict[int, int]] = {}   # group -> {member index: instances}
        self._next = 0
        self.put(list(members))

    def __len__(self) -> int:
        return len(self.names)

    # --- keeping it current ---
    def put(self, members: list[Member]) -> None:
        """Add members, or replace what is known of them (a heartbeat, a new state)."""
        new = [m.name for m in members if m.name not in self.index]
        if new:
            grow = len(new)
            for name in new:
                self.index[name] = len(self.names)
                self.names.append(name)
            self.state, self.arch, self.feat, self.group, self.count = (
                np.concatenate([a, np.zeros(grow, np.int64)])
                for a in (self.state, self.arch, self.feat, self.group, self.count))
            self.cap = np.concatenate([self.cap, np.zeros((3, grow))], axis=1)
            self.used = np.concatenate([self.used, np.zeros((3, grow))], axis=1)
            self.free = np.concatenate([self.free, np.zeros((3, grow))], axis=1)
        for m in members:
            i = self.index[m.name]
            self.state[i] = self._states[m.state]
            self.arch[i] = self._archs.setdefault(m.architecture, len(self._archs))
            self.feat[i] = self._features.mask(m.features)
            self.group[i] = self._groups.mask(m.groups)
            self.cap[:, i] = (m.capacity.cpus, m.capacity.memory, m.capacity.disk)
            self.used[:, i] = (m.used.cpus, m.used.memory, m.used.disk)
            self.free[:, i] = self.cap[:, i] - self.used[:, i]
            self.count[i] = m.instances
            for counts in self.pg.values():
                counts.pop(i, None)
            for pg, n in m.placement_groups.items():
                if n:
                    self.pg.setdefault(pg, {})[i] = n

    def set_state(self, member: str, state: str) -> None:
        """A member went offline, was evacuated, came back (its usage stays)."""
        if state not in STATES:
            raise InvalidInputError(f"unknown member state {state!r}")
        self.state[self._find(member)] = self._states[state]

    def snapshot(self) -> list[Member]:
        """The members as they are now (after the placements recorded)."""
        states = {i: s for s, i in self._states.items()}
        archs = {i: a for a, i in self._archs.items()}
        feats = {b: f for f, b in self._features.bit.items()}
        groups = {b: g for g, b in self._groups.bit.items()}
        return [Member(
            name=name, capacity=Resources(float(self.cap[0, i]), int(self.cap[1, i]),
                                          int(self.cap[2, i])),
            used=Resources(float(self.used[0, i]), int(self.used[1, i]),
                           int(self.used[2, i])),
            instances=int(self.count[i]), state=states[int(self.state[i])],
            architecture=archs[int(self.arch[i])],
            features=frozenset(f for b, f in feats.items() if self.feat[i] & b),
            groups=frozenset(g for b, g in groups.items() if self.group[i] & b),
            placement_groups={pg: c[i] for pg, c in self.pg.items() if c.get(i)})
            for i, name in enumerate(self.names)]

    def _pg_counts(self, name: str) -> Ints | None:
        """Instances of placement group ``name`` on each member (None: it has none)."""
        counts = self.pg.get(name)
        if not counts:
            return None
        out = np.zeros(len(self.names), np.int64)
        out[list(counts)] = list(counts.values())
        return out

    def record(self, member: str, req: Request) -> None:
        """``req`` was allocated on ``member``."""
        self._add(member, req, 1)

    def release(self, member: str, req: Request) -> None:
        """An instance placed with ``req`` left ``member``."""
        self._add(member, req, -1)

    def _add(self, member: str, req: Request, sign: int) -> None:
        i = self._find(member)
        r = req.resources
        for row, amount in enumerate((r.cpus, r.memory, r.disk)):
            self.used[row, i] += sign * amount
            self.free[row, i] -= sign * amount
        self.count[i] += sign
        if req.placement_group is not None:
            counts = self.pg.setdefault(req.placement_group.name, {})
            counts[i] = counts.get(i, 0) + sign
            if counts[i] <= 0:
                del counts[i]

    def _find(self, member: str) -> int:
        try:
            return self.index[member]
        except KeyError:
            raise NotFoundError("member", member) from None

    # --- placing ---
    def candidates(self, req: Request, limit: int = 4, strategy: str | None = None
                   ) -> list[str]:
        """The best members for ``req``, best first (the allocation tries them in turn);
        ``NoMemberFits`` when the filters leave nobody."""
        ok = self._filter(req)
        feasible = np.flatnonzero(ok)
        k = sample_size(len(self.names), self.percentage)
        if len(feasible) > k:   # round-robin from where the last placement stopped
            start = int(np.searchsorted(feasible, self._next % len(self.names)))
            window = feasible[start:start + k]
            if len(window) < k:
                window = np.concatenate([window, feasible[:k - len(window)]])
            feasible = window
            self._next = int(feasible[-1]) + 1
        return [self.names[i] for i in self._rank(feasible, req, strategy)[:limit]]

    def place(self, req: Request, strategy: str | None = None) -> str:
        """The best member, recorded as allocated (the in-memory path: no store)."""
        best = self.candidates(req, 1, strategy)[0]
        self.record(best, req)
        return best

    def _filter(self, req: Request) -> Mask:
        """The members that pass every filter. Fast path: the masks ANDed; only when
        nobody passes are the exclusions counted, filter by filter, for the error."""
        n = len(self.names)
        ok: Mask = np.ones(n, np.bool_)
        where = ""
        if req.target:
            if req.target.startswith("@"):
                group = req.target[1:]
                if group not in self._groups.bit:
                    raise NotFoundError("member group", group)
                ok = (self.group & self._groups.bit[group]) != 0
                where = f" of group {group}"
            else:
                ok = np.zeros(n, np.bool_)
                ok[self._find(req.target)] = True
                where = f" (target {req.target})"
        filters = self._filters(req)
        passing = ok.copy()
        for keep, _one, _many in filters:
            passing &= keep
        if passing.any():
            return passing
        excluded: dict[str, int] = {}
        for keep, one, many in filters:   # each member counted under its first filter
            lost = int(np.count_nonzero(ok & ~keep))
            if lost:
                excluded[_verb(lost, one, many)] = lost
            ok &= keep
        raise NoMemberFits(excluded, where)

    def _filters(self, req: Request) -> list[tuple[Mask, str, str]]:
        """(members kept, reason for one excluded, for several) of each filter, in order."""
        n = len(self.names)
        out: list[tuple[Mask, str, str]] = [
            (self.state != self._states[OFFLINE], "offline", "offline"),
            (self.state != self._states[EVACUATED], "evacuated", "evacuated")]
        if req.architecture:
            code = self._archs.get(req.architecture, -1)
            out.append((self.arch == code,
                        f"is another architecture (needs {req.architecture})",
                        f"are another architecture (needs {req.architecture})"))
        if req.features:
            need = self._features.mask(req.features, add=False)
            unknown = any(f not in self._features.bit for f in req.features)
            names = ", ".join(sorted(req.features))
            keep = ((self.feat & need) == need) if not unknown else np.zeros(n, np.bool_)
            out.append((keep, f"lacks {names}", f"lack {names}"))
        r = req.resources
        if r.cpus > 0:
            out.append((self.free[0] >= r.cpus - 1e-9, f"lacks CPU (needs {r.cpus:g})",
                        f"lack CPU (needs {r.cpus:g})"))
        for row, what, amount in ((1, "memory", r.memory), (2, "disk", r.disk)):
            if amount > 0:
                size = format_size(amount)
                out.append((self.free[row] >= amount, f"lacks {what} (needs {size})",
                            f"lack {what} (needs {size})"))
        pg = req.placement_group
        if pg is not None and pg.strict and (here := self._pg_counts(pg.name)) is not None:
            shown = pg.name.rsplit("/", 1)[-1]   # (counted per project: PROJECT/NAME)
            if pg.policy == SPREAD:
                out.append((here == 0, f"already hosts one of placement group {shown}"
                            " (strict spread)", f"already host one of placement group"
                            f" {shown} (strict spread)"))
            else:
                out.append((here > 0, f"does not host placement group {shown} (strict"
                            " compact)", f"do not host placement group {shown} (strict"
                            " compact)"))
        return out

    def _rank(self, idx: Ints, req: Request, strategy: str | None) -> Ints:
        """``idx`` ordered best first (``np.lexsort``: the last key is the primary)."""
        strategy = strategy or self.strategy
        mem = (self.used[1, idx] + req.resources.memory) / np.maximum(self.cap[1, idx], 1.0)
        count = self.count[idx]
        if strategy == SPREAD:
            keys: list[npt.NDArray[np.generic]] = [count, mem]
        else:
            keys = [-count, -mem]
        pg = req.placement_group
        if pg is not None and (counts := self.pg.get(pg.name)):
            here = np.array([counts.get(int(i), 0) for i in idx], np.int64)
            keys.append(here if pg.policy == SPREAD else -here)
        order: Ints = np.lexsort(keys)
        return idx[order]

    # --- how balanced ---
    def utilisation(self) -> Floats:
        """Declared memory use as a fraction of capacity, of the online members."""
        on = self.state == self._states[ONLINE]
        util: Floats = self.used[1, on] / np.maximum(self.cap[1, on], 1.0)
        return util

    def imbalance(self) -> float:
        """The standard deviation of ``utilisation()`` (0: perfectly even)."""
        u = self.utilisation()
        return float(u.std()) if len(u) else 0.0
