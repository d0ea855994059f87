"""REST routes for measured boot: a VM's vTPM PCRs and event log, its baseline, a
verification against it (services/measured_boot.py)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from cumulo.api.projects import PROJECT
from cumulo.services.host import Services
from cumulo.services.measured_boot import MeasuredBootService, Measurements
from cumulo.store.tpm_baselines import TpmBaselineStore


class EventOut(BaseModel):
    pcr: int
    type: str
    sha256: str
    description: str


class TpmOut(BaseModel):
    pcrs: dict[str, str] = Field(description="PCR index -> sha256 value, as the guest reads it")
    events: list[EventOut] = Field(description="the firmware's TCG2 event log")
    log_mismatched_pcrs: list[int] = Field(
        description="PCRs the event log does not replay to (empty: the log is whole)")


class BaselineOut(BaseModel):
    pcrs: dict[str, str]
    events: int
    created_at: datetime | None


class PcrChangeOut(BaseModel):
    pcr: int
    meaning: str
    baseline: str
    current: str
    events: list[str] = Field(description="events of this PCR the baseline did not have")


class VerifyOut(BaseModel):
    ok: bool
    changed: list[PcrChangeOut]
    baseline_at: datetime | None


def _tpm_out(m: Measurements) -> TpmOut:
    return TpmOut(pcrs={str(n): v for n, v in m.pcrs.items()},
                  events=[EventOut(pcr=e.pcr, type=e.type, sha256=e.sha256,
                                   description=e.description) for e in m.events],
                  log_mismatched_pcrs=m.mismatched)


def add_routes(r: APIRouter, svc: Services) -> None:
    def measured() -> MeasuredBootService:
        return MeasuredBootService(svc.instances, TpmBaselineStore(svc.store.db))

    @r.get("/instances/{name}/tpm", response_model=TpmOut,
           summary="A running VM's vTPM PCRs (sha256) and boot event log")
    def tpm(name: str, project: str = PROJECT) -> TpmOut:
        return _tpm_out(measured().report(project, name))

    @r.put("/instances/{name}/tpm/baseline", response_model=BaselineOut,
           summary="Record the current boot's PCRs 0-9 as the VM's measured-boot baseline")
    def baseline(name: str, project: str = PROJECT) -> BaselineOut:
        b = measured().record(project, name)
        return BaselineOut(pcrs={str(n): v for n, v in b.pcrs.items()}, events=len(b.events),
                           created_at=b.created_at)

    @r.get("/instances/{name}/tpm/verify", response_model=VerifyOut,
           summary="Compare the current boot with the baseline; names the PCRs that changed")
    def verify(name: str, project: str = PROJECT) -> VerifyOut:
        v = measured().verify(project, name)
        return VerifyOut(ok=v.ok, baseline_at=v.baseline_at, changed=[
            PcrChangeOut(pcr=c.pcr, meaning=c.meaning, baseline=c.baseline,
                         current=c.current, events=c.events) for c in v.changed])
