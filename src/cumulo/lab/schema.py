"""The results file of `cumulo bench run`: a documented, versioned JSON schema.

Version 1 (``"schema": "cumulo-bench", "version": 1``)::

    {
      "schema": "cumulo-bench", "version": 1,
      "created": "2026-11-23T11:02:03Z",           # UTC, when the run started
      "settings": {"platforms": [...], "suites": [...], "repeat": 3, "quick": true},
      "environment": {
        "host": {...},                             # `cumulo host info --format json` of the daemon
        "tools": {"sysbench": "sysbench 1.0.20", "hpcc": "1.5.0", "cumulo": "0.1.0"},
        "accel": "tcg"                             # how VMs run here: kvm or tcg
      },
      "series": [                                   # one per platform x suite x metric x x
        {"platform": "native", "suite": "cpu", "metric": "sysbench_cpu",
         "unit": "events/s", "higher_is_better": true,
         "x": null, "x_label": null,                # a parameter, e.g. HPL problem size N
         "samples": [1234.5, 1240.1, 1229.9]}       # raw values, one per repetition
      ],
      "notes": [{"platform": "vm", "suite": "cpu", "message": "..."}]   # what failed or was skipped
    }

Metrics of the network suite (instance to instance; native: the host's loopback):
``iperf3_tcp`` (Gbit/s), ``iperf3_udp`` (Gbit/s received, ``iperf3 -u -b 0 -l 1400``),
``iperf3_udp_loss`` (% of datagrams lost, lower is better), ``tcp_lat`` and ``udp_lat``
(qperf, us, lower is better). For instances, each also with the suffix ``_to_host``: the
client in the instance, the server on the lab network's gateway address (the host side of
its bridge); native has none of these (reports compare them with native's loopback ones).
Boot: ``launch_to_ready`` (s) for every instance; app VMs (``appvm-app``,
``appvm-generic``: no exec) are ready at their app's first console line, and add
``qemu_to_first_line`` (s, from QEMU's process start). New platforms and metrics only add
series, so files written before them still read as version 1.

Readers refuse a file whose schema or version they do not know (InvalidInputError), so a
future version 2 cannot be misread as version 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from cumulo.errors import InvalidInputError

SCHEMA = "cumulo-bench"
VERSION = 1

PLATFORMS = ("native", "container", "vm", "appvm", "vm-emulated-io", "appvm-app",
             "appvm-generic")
SUITES = ("cpu", "memory", "network", "disk", "boot", "footprint", "density")


class Settings(BaseModel):
    platforms: list[str]
    suites: list[str]
    repeat: int = Field(ge=1)
    quick: bool = False


class Environment(BaseModel):
    host: dict[str, Any] = Field(default_factory=dict)
    tools: dict[str, str] = Field(default_factory=dict)
    accel: str = "unknown"


class Series(BaseModel):
    platform: str
    suite: str
    metric: str
    unit: str
    higher_is_better: bool = True
    x: float | None = None
    x_label: str | None = None
    samples: list[float] = Field(default_factory=list)

    def key(self) -> tuple[str, str, float | None]:
        """What identifies a series across platforms: the same key is comparable."""
        return self.suite, self.metric, self.x


class Note(BaseModel):
    platform: str
    suite: str
    message: str


class Results(BaseModel):
    schema_: str = Field(default=SCHEMA, alias="schema")
    version: int = VERSION
    created: str
    settings: Settings
    environment: Environment = Field(default_factory=Environment)
    series: list[Series] = Field(default_factory=list)
    notes: list[Note] = Field(default_factory=list)

    model_config = {"populate_by_name": True}

    def add(self, platform: str, suite: str, metric: str, unit: str, value: float, *,
            higher_is_better: bool = True, x: float | None = None,
            x_label: str | None = None) -> Series:
        """Append one sample to its series (created on first use)."""
        for s in self.series:
            if (s.platform, s.suite, s.metric, s.x) == (platform, suite, metric, x):
                s.samples.append(float(value))
                return s
        s = Series(platform=platform, suite=suite, metric=metric, unit=unit,
                   higher_is_better=higher_is_better, x=x, x_label=x_label,
                   samples=[float(value)])
        self.series.append(s)
        return s

    def note(self, platform: str, suite: str, message: str) -> None:
        self.notes.append(Note(platform=platform, suite=suite, message=message))

    def find(self, platform: str, suite: str, metric: str, x: float | None = None
             ) -> Series | None:
        for s in self.series:
            if (s.platform, s.suite, s.metric, s.x) == (platform, suite, metric, x):
                return s
        return None

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2) + "\n"

    def save(self, path: Path) -> None:
        """Write atomically: a reader never sees half a file."""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.to_json())
        tmp.replace(path)


def loads(text: str, where: str = "results") -> Results:
    try:
        data = json.loads(text)
    except ValueError as err:
        raise InvalidInputError(f"{where}: not JSON ({err})") from err
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise InvalidInputError(f"{where}: not a cumulo bench results file (no \"schema\": "
                                f"\"{SCHEMA}\")")
    if data.get("version") != VERSION:
        raise InvalidInputError(f"{where}: results schema version {data.get('version')!r}; "
                                f"this cumulo reads version {VERSION}")
    try:
        return Results.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise InvalidInputError(f"{where}: invalid results file at {loc}: {first['msg']}") \
            from err


def load(path: Path) -> Results:
    try:
        text = path.read_text()
    except OSError as err:
        raise InvalidInputError(f"cannot read {path}: {err.strerror}") from err
    return loads(text, str(path))
