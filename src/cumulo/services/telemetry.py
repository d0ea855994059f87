"""One reading of every instance's usage: what metrics scrapes and the history sampler share.

Everything is read at the moment of the call (cgroups, the driver, NIC counters of
the host ends), nothing is kept: an instance that is gone is simply not there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from cumulo.domain.lifecycle import State
from cumulo.domain.models import Instance
from cumulo.drivers.base import Usage
from cumulo.net.base import NicCounters
from cumulo.services.instances import InstanceService

LIVE = (State.RUNNING, State.PAUSED)


@dataclass(frozen=True)
class Sample:
    instance: Instance
    usage: Usage
    nics: dict[str, NicCounters] = field(default_factory=dict)   # by host-side name
    time: float = 0.0                                             # unix time of the reading


def sample(instances: InstanceService, inst: Instance,
           nics: dict[str, NicCounters] | None = None) -> Sample:
    """Usage and NIC counters of one instance (nothing when it is not running); ``nics``:
    every link's counters, read once for many instances."""
    if inst.state not in LIVE:
        return Sample(inst, Usage(), {}, time.time())
    return Sample(inst, instances.usage(inst), instances.networks.counters(inst, nics),
                  time.time())


def sample_all(instances: InstanceService) -> list[Sample]:
    """Every instance of every project, its state refreshed from the host."""
    listed = instances.list(None)
    nics = instances.networks.all_counters() if any(i.nics for i in listed) else None
    return [sample(instances, inst, nics) for inst in listed]
