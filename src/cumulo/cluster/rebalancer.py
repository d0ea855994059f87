"""The rebalancer's I/O around the pure plan (cluster/rebalance.py): read the members
and allocations from the store, plan a bounded list of moves, carry them out one by one
(cluster/move.py: the allocation moved to the planned member in a locked transaction,
then live migration, cold when live is impossible), and log and publish each decision
with the imbalance score before and after it.

The automatic mode (``rebalance.interval`` > 0 in the cluster's settings) checks after
a heartbeat once the interval has passed; only the first online member by name acts,
and a round that moves something must first take the cluster-wide cooldown
(``ClusterStore.take_round``), so two members never rebalance at once. A round runs as
an operation (the heartbeat goes on meanwhile).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from cumulo.cluster import rebalance
from cumulo.cluster.membership import ROOT_CALLER, Membership
from cumulo.cluster.model import PlacementGroup
from cumulo.cluster.move import Mover
from cumulo.cluster.settings import Rebalance
from cumulo.domain.models import Operation
from cumulo.drivers.vm import appvm
from cumulo.drivers.vm import driver as vm_driver
from cumulo.errors import CumuloError, NotFoundError
from cumulo.services.instances import InstanceService
from cumulo.services.operations import Progress
from cumulo.store.cluster import ONLINE

log = logging.getLogger(__name__)
# what an instance launched without --memory weighs, by type (cluster/rebalance.py)
DEFAULT_MEMORY = {"container": rebalance.CONTAINER_WEIGHT, "vm": vm_driver.DEFAULT_MEMORY,
                  "imagevm": vm_driver.DEFAULT_MEMORY, "appvm": appvm.DEFAULT_MEMORY}
MAX_MOVES = 10   # cumulo cluster rebalance without --max-moves
_ROUND = threading.Lock()   # one round at a time on this member, asked or automatic


@dataclass(frozen=True)
class Step:
    """One planned move, with the project apart (plans name instances PROJECT/NAME)."""

    project: str
    instance: str
    source: str
    target: str
    score_before: float
    score_after: float

    def out(self) -> dict[str, Any]:
        return {"project": self.project, "instance": self.instance, "source": self.source,
                "target": self.target, "score_before": round(self.score_before, 6),
                "score_after": round(self.score_after, 6)}


class Rebalancer:
    def __init__(self, cluster: Membership, instances: InstanceService,
                 caller: str = ROOT_CALLER) -> None:
        self.cluster, self.instances = cluster, instances
        self.mover = Mover(cluster, instances, caller)
        self._busy = threading.Event()   # an automatic round is submitted or runs
        self._checked = 0.0

    def settings(self) -> Rebalance:
        return Rebalance.of(self.cluster.store.config())

    def plan(self, max_moves: int = MAX_MOVES, min_gain: float | None = None
             ) -> tuple[float, float, list[Step]]:
        """(score before, score after, the moves), best first."""
        self.cluster._require()
        members = self.mover.scheduler.members
        groups: dict[tuple[str, str], PlacementGroup] = {}
        placed = []
        for a in members.allocations():
            pg = None
            if a.placement_group is not None:
                key = (a.project, a.placement_group)
                if key not in groups:
                    g = members.get_group(*key)
                    groups[key] = PlacementGroup(f"{a.project}/{g.name}", g.policy, g.strict)
                pg = groups[key]
            placed.append(rebalance.Placed(f"{a.project}/{a.instance}", a.member,
                                           a.resources, pg))
        gain = self.settings().min_gain if min_gain is None else min_gain
        types = {f"{i.project}/{i.name}": i.type for i in self.instances.store.list_instances()}
        weighed, placed = rebalance.weighed(members.scheduling(), placed, types,
                                            DEFAULT_MEMORY)
        p = rebalance.plan(weighed, placed, max_moves=max_moves, min_gain=gain)
        steps, before = [], p.before
        for m in p.moves:
            project, _, name = m.instance.partition("/")
            steps.append(Step(project, name, m.source, m.target, before, m.score_after))
            before = m.score_after
        return p.before, p.after, steps

    def run(self, max_moves: int = MAX_MOVES, automatic: bool = False,
            plan: tuple[float, float, list[Step]] | None = None) -> Operation:
        """Carry out the plan (made now unless given) as an operation."""
        before, after, steps = plan or self.plan(max_moves)
        how = "automatic" if automatic else "asked"
        log.info("rebalance (%s): imbalance %.4f, %d move(s) planned to reach %.4f", how,
                 before, len(steps), after)
        self._publish("planned", how, before=before, after=after, moves=len(steps))

        def work(progress: Progress) -> dict[str, Any]:
            try:
                with _ROUND:
                    return self._carry_out(steps, how, progress)
            finally:
                self._busy.clear()

        if automatic:
            self._busy.set()
        try:
            return self.instances.ops.submit(
                f"rebalance the cluster ({how})", work,
                {"members": sorted({s.source for s in steps} | {s.target for s in steps})})
        except BaseException:
            self._busy.clear()
            raise

    def _carry_out(self, steps: list[Step], how: str, progress: Progress) -> dict[str, Any]:
        moved: list[str] = []
        start = current = self.score()
        for i, s in enumerate(steps):
            progress(i / max(len(steps), 1), f"moving {s.instance} from {s.source} to"
                                             f" {s.target} ({i + 1}/{len(steps)})")
            try:
                _dest, kind = self.mover.relocate(s.project, s.instance, s.source,
                                                  dest=s.target)
            except CumuloError as err:   # it moved or filled up meanwhile: skip it
                log.warning("rebalance (%s): %s stays on %s: %s", how, s.instance, s.source,
                            err)
                self._publish("skipped", how, instance=s.instance, project=s.project,
                              source=s.source, target=s.target, reason=str(err))
                continue
            now = self.score()
            log.info("rebalance (%s): moved %s from %s to %s (%s): imbalance %.4f -> %.4f",
                     how, s.instance, s.source, s.target, kind, current, now)
            self.instances.events.lifecycle(
                "rebalanced", s.project, s.instance, source=s.source, target=s.target,
                how=kind, score_before=round(current, 6), score_after=round(now, 6),
                mode=how)
            moved.append(f"{s.instance}: {s.source} -> {s.target} ({kind}),"
                         f" imbalance {current:.4f} -> {now:.4f}")
            current = now
        msg = f"imbalance {start:.4f} -> {current:.4f} with {len(moved)} move(s)"
        log.info("rebalance (%s): %s", how, msg)
        self._publish("done", how, before=start, after=current, moves=len(moved))
        progress(1.0, msg)
        return {"moved": moved, "score_before": round(start, 6),
                "score_after": round(current, 6)}

    def score(self) -> float:
        return rebalance.score(self.mover.scheduler.members.scheduling())

    def _publish(self, what: str, how: str, **context: Any) -> None:
        for k, v in context.items():
            if isinstance(v, float):
                context[k] = round(v, 6)
        self.instances.events.publish("lifecycle", {
            "action": f"cluster-rebalance-{what}", "source": "/1.0/cluster",
            "name": self.cluster.member, "context": {"mode": how, **context}})

    # --- the automatic mode (after each heartbeat) ---
    def tick(self) -> Operation | None:
        """A check, if the interval has passed: a round when this member leads, the
        score is at or above the threshold, the plan gains enough and the cooldown is
        over; the round's operation, or None."""
        me = self.cluster.member
        if me is None or self.cluster.scheduler is None:
            return None
        cfg = self.settings()
        now = time.monotonic()
        if cfg.interval <= 0 or now - self._checked < cfg.interval:
            return None
        self._checked = now
        online = sorted(m.name for m in self.cluster.store.list_members()
                        if self.cluster.state_of(m) == ONLINE)
        if not online or online[0] != me or self._busy.is_set():
            return None
        try:
            plan = self.plan(cfg.batch, cfg.min_gain)
        except (CumuloError, NotFoundError) as err:
            log.warning("rebalance (automatic): cannot plan: %s", err)
            return None
        before, after, steps = plan
        if before < cfg.threshold or not steps:
            log.debug("rebalance (automatic): imbalance %.4f (threshold %g), %d move(s):"
                      " nothing to do", before, cfg.threshold, len(steps))
            return None
        if not self.cluster.store.take_round("rebalance", cfg.cooldown):
            log.debug("rebalance (automatic): in its cooldown")
            return None
        return self.run(cfg.batch, automatic=True, plan=plan)
