"""REST routes for security groups, port forwards and NIC bandwidth (services/firewall.py)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Response
from pydantic import BaseModel, Field

from cumulo.api.projects import PROJECT
from cumulo.api.schemas import Strict
from cumulo.domain.acl import SecurityGroup
from cumulo.services.firewall import FirewallService
from cumulo.services.host import Services
from cumulo.store.firewall import Forward


class GroupCreate(Strict):
    name: str
    description: str = ""


class RuleIn(Strict):
    direction: str = Field("ingress", description="ingress or egress")
    protocol: str = Field("any", description="tcp, udp, icmp or any")
    ports: str | None = Field(None, description="tcp/udp destination ports: 80 or 8000-8080")
    cidr: str | None = Field(None, description="peer address range; default: anywhere")
    group: str | None = Field(None, description="peer: the NICs in this security group")


class RuleOut(BaseModel):
    index: int
    direction: str
    protocol: str
    ports: list[int] | None
    cidr: str | None
    group: str | None
    text: str


class GroupOut(BaseModel):
    name: str
    project: str
    description: str
    rules: list[RuleOut]
    used_by: list[str]


class GroupAttach(Strict):
    instance: str
    network: str | None = Field(None, description="only the NIC on this network; default: all")


class ForwardIn(Strict):
    listen_address: str = Field(description="an address of the host's own links; in a"
                                " cluster, a member's cluster address: the forward then"
                                " answers on the address of the member its instance runs on")
    listen_port: int
    protocol: str = "tcp"
    instance: str
    target_port: int | None = Field(None, description="default: listen_port")


class ForwardOut(BaseModel):
    network: str
    listen_address: str = Field(description="where it answers now")
    listen_port: int
    protocol: str
    instance: str
    target_ip: str
    target_port: int


def _group_out(g: SecurityGroup, used_by: list[str]) -> GroupOut:
    return GroupOut(name=g.name, project=g.project, description=g.description, used_by=used_by,
                    rules=[RuleOut(index=i, direction=r.direction, protocol=r.protocol,
                                   ports=list(r.ports) if r.ports else None, cidr=r.cidr,
                                   group=r.group, text=r.describe())
                           for i, r in enumerate(g.rules, 1)])


def _forward_out(f: Forward) -> ForwardOut:
    d = asdict(f)
    return ForwardOut(**{k: d[k] for k in ForwardOut.model_fields})


def add_routes(r: APIRouter, svc: Services) -> None:
    def fw_() -> FirewallService:
        return svc.networks.firewall

    @r.get("/security-groups", response_model=list[GroupOut], summary="List security groups")
    def list_groups(project: str = PROJECT) -> list[GroupOut]:
        return [_group_out(g, fw_().users(project, g.name)) for g in fw_().list_groups(project)]

    @r.post("/security-groups", status_code=201, response_model=GroupOut,
            summary="Create an empty security group (a NIC in it takes only what rules allow)")
    def create_group(body: GroupCreate, project: str = PROJECT) -> GroupOut:
        return _group_out(fw_().create_group(project, body.name, body.description), [])

    @r.get("/security-groups/{name}", response_model=GroupOut, summary="A security group")
    def get_group(name: str, project: str = PROJECT) -> GroupOut:
        return _group_out(fw_().get_group(project, name), fw_().users(project, name))

    @r.delete("/security-groups/{name}", status_code=204,
              summary="Delete a security group no NIC uses")
    def delete_group(name: str, project: str = PROJECT) -> Response:
        fw_().delete_group(project, name)
        return Response(status_code=204)

    @r.post("/security-groups/{name}/rules", response_model=GroupOut,
            summary="Add an allow rule; applies live")
    def add_rule(name: str, body: RuleIn, project: str = PROJECT) -> GroupOut:
        g = fw_().add_rule(project, name, body.direction, body.protocol, body.ports, body.cidr,
                        body.group)
        return _group_out(g, fw_().users(project, name))

    @r.delete("/security-groups/{name}/rules/{index}", response_model=GroupOut,
              summary="Remove rule INDEX (from 1); applies live")
    def remove_rule(name: str, index: int, project: str = PROJECT) -> GroupOut:
        return _group_out(fw_().remove_rule(project, name, index), fw_().users(project, name))

    @r.post("/security-groups/{name}/attach", status_code=204,
            summary="Put an instance's NICs in the group; applies live")
    def attach(name: str, body: GroupAttach, project: str = PROJECT) -> Response:
        fw_().attach(project, name, body.instance, body.network)
        return Response(status_code=204)

    @r.post("/security-groups/{name}/detach", status_code=204,
            summary="Take an instance's NICs out of the group; applies live")
    def detach(name: str, body: GroupAttach, project: str = PROJECT) -> Response:
        fw_().detach(project, name, body.instance, body.network)
        return Response(status_code=204)

    @r.get("/networks/{name}/forwards", response_model=list[ForwardOut],
           summary="Port forwards into a network")
    def list_forwards(name: str, project: str = PROJECT) -> list[ForwardOut]:
        return [_forward_out(f) for f in fw_().list_forwards(project, name)]

    @r.post("/networks/{name}/forwards", status_code=201, response_model=ForwardOut,
            summary="Forward a host address and port to an instance on the network")
    def add_forward(name: str, body: ForwardIn, project: str = PROJECT) -> ForwardOut:
        return _forward_out(fw_().add_forward(
            project, name, body.listen_address, body.listen_port, body.protocol,
            body.instance, body.target_port or body.listen_port))

    @r.delete("/networks/{name}/forwards/{protocol}/{address}/{port}", status_code=204,
              summary="Remove a port forward")
    def delete_forward(name: str, protocol: str, address: str, port: int,
                       project: str = PROJECT) -> Response:
        fw_().delete_forward(project, name, address, port, protocol)
        return Response(status_code=204)
