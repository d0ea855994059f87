"""Placing an instance in the cluster: the pure engine (cluster/placement.py) over the
members table, and the allocation transaction (store/members.py) that commits it.

``Scheduler.allocate`` ranks candidates on an in-memory inventory, then lets the store
lock and re-check them in turn; a lost race (every candidate filled up meanwhile)
reloads the inventory from the store and tries again, a few rounds at most. The
inventory is kept current by the allocations this process makes (a candidate is
assumed taken while its transaction runs, as the Kubernetes scheduler's "assume"
cache does, so concurrent launches here spread over members instead of queueing on one
row lock) and reloaded when older than ``max_age`` seconds (other members allocate too).
No member fits: said only on an inventory read afresh (a member restored or added since
the copy).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from cumulo.cluster.model import SPREAD, NoMemberFits, Request
from cumulo.errors import ConflictError
from cumulo.store.members import Allocation, LostRace, MemberStore

if TYPE_CHECKING:
    from cumulo.cluster.placement import Inventory


class Scheduler:
    def __init__(self, members: MemberStore, strategy: str = SPREAD,
                 max_age: float = 5.0, rounds: int = 3, candidates: int = 4,
                 strategy_of: Callable[[], str] | None = None) -> None:
        self.members, self._strategy, self._strategy_of = members, strategy, strategy_of
        self.max_age, self.rounds, self.limit = max_age, rounds, candidates
        self._lock = threading.Lock()
        self._inventory: Inventory | None = None
        self._loaded = 0.0

    @property
    def strategy(self) -> str:
        """spread or compact: the cluster's setting (``placement.strategy``) if it has
        one, read afresh."""
        return self._strategy_of() if self._strategy_of is not None else self._strategy

    def inventory(self, fresh: bool = False) -> Inventory:
        """The members as the engine sees them (reloaded if stale or ``fresh``)."""
        from cumulo.cluster.placement import Inventory  # numpy: only once placing

        if fresh or self._inventory is None or \
                time.monotonic() - self._loaded > self.max_age:
            self._inventory = Inventory(self.members.scheduling(), strategy=self.strategy)
            self._loaded = time.monotonic()
        return self._inventory

    def allocate(self, project: str, instance: str, req: Request) -> str:
        """Choose a member for ``instance`` and record the allocation there; the member's
        name. ``req.placement_group`` needs only its name: policy and strictness come
        from the store. ``NoMemberFits`` (one line: which filter excluded how many
        members) when nobody can, ``ConflictError`` if every round lost its race."""
        req = self.stored_group(project, req)
        strategy = self.strategy   # as set now (the inventory may be older)
        last: LostRace | None = None
        for round_ in range(self.rounds):
            with self._lock:
                inv = self.inventory(fresh=round_ > 0)
                try:
                    ranked = inv.candidates(req, self.limit, strategy)
                except NoMemberFits:   # said on what the store holds now, not on a
                    if round_ > 0:     # copy up to max_age old (a member restored since)
                        raise
                    inv = self.inventory(fresh=True)
                    ranked = inv.candidates(req, self.limit, strategy)
                inv.record(ranked[0], req)   # assumed taken, so that launches in this
                                             # process meanwhile look elsewhere
            try:
                member = self.members.allocate(project, instance, req, ranked)
            except BaseException as err:
                self._unassume(inv, ranked[0], req)
                if not isinstance(err, LostRace):
                    raise
                last = err
                continue
            if member != ranked[0]:
                self._unassume(inv, ranked[0], req)
                with self._lock:
                    if inv is self._inventory:
                        inv.record(member, req)
            return member
        raise ConflictError(f"could not place instance {instance!r}: {last}")

    def stored_group(self, project: str, req: Request) -> Request:
        """``req`` with its placement group as stored (policy, strict), named as the
        inventory counts groups (per project)."""
        if req.placement_group is None:
            return req
        stored = self.members.get_group(project, req.placement_group.name.rsplit("/")[-1])
        return replace(req, placement_group=replace(stored, name=f"{project}/{stored.name}"))

    def relocate(self, project: str, instance: str, req: Request,
                 prefer: str | None = None) -> tuple[str, Allocation | None]:
        """Choose another member for an instance that exists (evacuation, recovery) and
        move its allocation there, re-checked in one locked transaction (one is made if
        it had none); ``prefer``: try that member first (a plan's choice). The member,
        and the allocation as it was (``undo`` puts it back). ``NoMemberFits`` when the
        filters leave nobody (its member, offline or evacuated, is excluded by them)."""
        req = self.stored_group(project, req)
        before = self.members.allocation(project, instance)
        last: LostRace | None = None
        for round_ in range(self.rounds):
            with self._lock:
                ranked = self.inventory(fresh=True).candidates(req, self.limit)
            if prefer is not None and round_ == 0:
                ranked = [prefer, *[m for m in ranked if m != prefer]]
            try:
                if before is None:
                    member = self.members.allocate(project, instance, req, ranked)
                else:
                    member = self._move_first(project, instance, ranked)
            except LostRace as err:
                last = err
                continue
            self.forget()
            return member, before
        raise ConflictError(f"could not place instance {instance!r}: {last}")

    def _move_first(self, project: str, instance: str, ranked: list[str]) -> str:
        why: dict[str, str] = {}
        for member in ranked:
            try:
                self.members.move(project, instance, member)
                return member
            except LostRace as err:
                why.update(err.why)
        raise LostRace(why)

    def undo(self, project: str, instance: str, before: Allocation | None) -> None:
        """Put an allocation back as ``relocate`` found it (the move failed)."""
        if before is None:
            self.members.release(project, instance)
        else:
            self.members.move(project, instance, before.member, check=False)
        self.forget()

    def _unassume(self, inv: Inventory, member: str, req: Request) -> None:
        with self._lock:
            if inv is self._inventory:   # (a reload has forgotten it already)
                inv.release(member, req)

    def release(self, project: str, instance: str) -> Allocation:
        done = self.members.release(project, instance)
        self.forget()
        return done

    def move(self, project: str, instance: str, to: str, check: bool = True) -> Allocation:
        done = self.members.move(project, instance, to, check)
        self.forget()
        return done

    def forget(self) -> None:
        """Reload the inventory before the next placement (members changed)."""
        with self._lock:
            self._inventory = None
