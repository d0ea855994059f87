"""The rights table: what each route and method needs. One row per route; a route
missing here is refused over TCP (and fails tests/unit/test_authz_sweep.py).

Scopes: ``project`` (the ``project`` query parameter, default ``default``: the caller's
role there decides; no role there: 404 as if nothing existed), ``server`` (not in a
project: reads are open to every identity, the rest needs ``admin``), ``object`` (the
route checks the object's own project itself: operations), ``events`` (one project,
or every project for ``admin``), ``public`` (no token at all: the web console's files,
which hold no secret; a browser fetches them before it has a token).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cumulo.domain.roles import ADMIN, MANAGE, MIGRATE, OPERATE, READ


@dataclass(frozen=True)
class Rule:
    right: str
    scope: str = "project"
    path_project: str | None = None   # the project is this path parameter (/projects/{name})
    also: str | None = None   # another right that suffices (a host asks if an image is here)


P, S, PUBLIC = "project", "server", "public"
_I = "/1.0/instances/{name}"
_V = "/1.0/volumes/{name}"
_G = "/1.0/security-groups/{name}"

RULES: dict[tuple[str, str], Rule] = {
    # the server
    ("GET", "/1.0"): Rule(READ, S),
    ("GET", "/1.0/host"): Rule(READ, S),
    ("GET", "/1.0/metrics"): Rule(ADMIN, S),   # usage of every project's instances
    ("GET", "/openapi.json"): Rule(READ, S),
    ("GET", "/docs"): Rule(READ, S),
    ("GET", "/docs/oauth2-redirect"): Rule(READ, S),
    ("GET", "/redoc"): Rule(READ, S),
    # instances
    ("GET", "/1.0/instances"): Rule(READ),
    ("POST", "/1.0/instances"): Rule(MANAGE),
    ("GET", _I): Rule(READ),
    ("PATCH", _I): Rule(MANAGE),
    ("DELETE", _I): Rule(MANAGE),
    ("GET", f"{_I}/history"): Rule(READ),
    ("GET", f"{_I}/console"): Rule(READ),
    ("PUT", f"{_I}/state"): Rule(OPERATE),
    ("POST", f"{_I}/exec"): Rule(OPERATE),
    ("WS", f"{_I}/exec-ws"): Rule(OPERATE),
    ("PUT", f"{_I}/files"): Rule(OPERATE),     # as much as an exec of cat could
    ("GET", f"{_I}/files"): Rule(OPERATE),
    ("GET", f"{_I}/tpm"): Rule(READ),             # fixed files read by the guest agent
    ("PUT", f"{_I}/tpm/baseline"): Rule(OPERATE),
    ("GET", f"{_I}/tpm/verify"): Rule(READ),
    ("WS", f"{_I}/console-ws"): Rule(OPERATE),
    ("POST", f"{_I}/bandwidth"): Rule(MANAGE),
    ("POST", f"{_I}/nics"): Rule(MANAGE),
    ("DELETE", f"{_I}/nics/{{network}}"): Rule(MANAGE),
    ("POST", f"{_I}/checkpoint"): Rule(MANAGE),
    ("POST", f"{_I}/restore"): Rule(MANAGE),
    ("POST", f"{_I}/migrate"): Rule(MANAGE),
    ("POST", f"{_I}/publish"): Rule(MANAGE),   # and the image write check of the route
    ("GET", f"{_I}/snapshots"): Rule(READ),
    ("POST", f"{_I}/snapshots"): Rule(MANAGE),
    ("DELETE", f"{_I}/snapshots/{{snap}}"): Rule(MANAGE),
    ("POST", f"{_I}/snapshots/{{snap}}/restore"): Rule(MANAGE),
    # receiving an instance from another host
    ("POST", "/1.0/migrations/incoming"): Rule(MIGRATE),
    ("POST", "/1.0/migrations/incoming/{name}/finish"): Rule(MIGRATE),
    ("PUT", "/1.0/migrations/incoming/{name}/state/{part}"): Rule(MIGRATE),
    ("DELETE", "/1.0/migrations/incoming/{name}"): Rule(MIGRATE),
    ("POST", "/1.0/migrations/images"): Rule(MIGRATE, S),
    ("DELETE", "/1.0/migrations/images/{fingerprint}"): Rule(MIGRATE, S),
    # images: a project's own (features.images=true) or default's; a route that changes
    # default's images from another project also needs manage in default (image_write)
    ("GET", "/1.0/images"): Rule(READ),
    ("GET", "/1.0/images/{ref:path}"): Rule(READ),
    ("GET", "/1.0/image-files/{ref:path}"): Rule(READ, also=MIGRATE),   # a host: has it?
    ("POST", "/1.0/images"): Rule(MANAGE),
    ("POST", "/1.0/images/app"): Rule(MANAGE),
    ("POST", "/1.0/image-imports"): Rule(MANAGE),
    ("DELETE", "/1.0/images/{ref:path}"): Rule(MANAGE),
    ("POST", "/1.0/image-aliases"): Rule(MANAGE),
    ("DELETE", "/1.0/image-aliases/{name:path}"): Rule(MANAGE),
    # networks, forwards, security groups
    ("GET", "/1.0/networks"): Rule(READ),
    ("POST", "/1.0/networks"): Rule(MANAGE),
    ("GET", "/1.0/networks/{name}"): Rule(READ),
    ("DELETE", "/1.0/networks/{name}"): Rule(MANAGE),
    ("GET", "/1.0/networks/{name}/forwards"): Rule(READ),
    ("POST", "/1.0/networks/{name}/forwards"): Rule(MANAGE),
    ("DELETE", "/1.0/networks/{name}/forwards/{protocol}/{address}/{port}"): Rule(MANAGE),
    ("GET", "/1.0/security-groups"): Rule(READ),
    ("POST", "/1.0/security-groups"): Rule(MANAGE),
    ("GET", _G): Rule(READ),
    ("DELETE", _G): Rule(MANAGE),
    ("POST", f"{_G}/rules"): Rule(MANAGE),
    ("DELETE", f"{_G}/rules/{{index}}"): Rule(MANAGE),
    ("POST", f"{_G}/attach"): Rule(MANAGE),
    ("POST", f"{_G}/detach"): Rule(MANAGE),
    # placement groups (api/placement_routes.py): a project's, like security groups
    ("GET", "/1.0/placement-groups"): Rule(READ),
    ("POST", "/1.0/placement-groups"): Rule(MANAGE),
    ("GET", "/1.0/placement-groups/{name}"): Rule(READ),
    ("DELETE", "/1.0/placement-groups/{name}"): Rule(MANAGE),
    # storage
    ("GET", "/1.0/storage-pools"): Rule(READ, S),
    ("GET", "/1.0/storage-pools/{name}"): Rule(READ, S),
    ("GET", "/1.0/volumes"): Rule(READ),
    ("POST", "/1.0/volumes"): Rule(MANAGE),
    ("GET", _V): Rule(READ),
    ("PATCH", _V): Rule(MANAGE),
    ("DELETE", _V): Rule(MANAGE),
    ("POST", f"{_V}/attachments"): Rule(MANAGE),
    ("DELETE", f"{_V}/attachments/{{instance}}"): Rule(MANAGE),
    ("GET", f"{_V}/snapshots"): Rule(READ),
    ("POST", f"{_V}/snapshots"): Rule(MANAGE),
    ("DELETE", f"{_V}/snapshots/{{snap}}"): Rule(MANAGE),
    ("POST", f"{_V}/snapshots/{{snap}}/restore"): Rule(MANAGE),
    # operations belong to a project; one by id is also checked by the route
    ("GET", "/1.0/operations"): Rule(READ),
    ("GET", "/1.0/operations/{op_id}"): Rule(READ, "object"),
    ("DELETE", "/1.0/operations/{op_id}"): Rule(OPERATE, "object"),
    ("WS", "/1.0/events"): Rule(READ, "events"),
    # projects: each reads its own; settings (quotas, restrictions) are the admin's
    ("GET", "/1.0/projects"): Rule(READ, S),   # the route lists only those it sees
    ("POST", "/1.0/projects"): Rule(ADMIN, S),
    ("GET", "/1.0/projects/{name}"): Rule(READ, path_project="name"),
    ("GET", "/1.0/projects/{name}/state"): Rule(READ, path_project="name"),
    ("PUT", "/1.0/projects/{name}"): Rule(ADMIN, S),
    ("PATCH", "/1.0/projects/{name}"): Rule(ADMIN, S),
    ("DELETE", "/1.0/projects/{name}"): Rule(ADMIN, S),
    # who may call: identities, host-to-host tokens, remotes, the audit log
    ("GET", "/1.0/identities"): Rule(ADMIN, S),
    ("POST", "/1.0/identities"): Rule(ADMIN, S),
    ("GET", "/1.0/identities/{name}"): Rule(ADMIN, S),
    ("DELETE", "/1.0/identities/{name}"): Rule(ADMIN, S),
    ("PUT", "/1.0/identities/{name}/roles/{project}"): Rule(ADMIN, S),
    ("DELETE", "/1.0/identities/{name}/roles/{project}"): Rule(ADMIN, S),
    ("GET", "/1.0/audit"): Rule(ADMIN, S),
    ("GET", "/1.0/tokens"): Rule(ADMIN, S),
    ("POST", "/1.0/tokens"): Rule(ADMIN, S),
    ("DELETE", "/1.0/tokens/{name}"): Rule(ADMIN, S),
    ("GET", "/1.0/remotes"): Rule(ADMIN, S),
    ("POST", "/1.0/remotes"): Rule(ADMIN, S),
    ("DELETE", "/1.0/remotes/{name}"): Rule(ADMIN, S),
    # the web console: its files, cumulo ui's sessions (root over the unix socket only:
    # the route refuses every identity), benchmark reports
    ("GET", "/ui"): Rule(READ, PUBLIC),
    ("GET", "/ui/"): Rule(READ, PUBLIC),
    ("GET", "/ui/{file:path}"): Rule(READ, PUBLIC),
    ("POST", "/1.0/ui-sessions"): Rule(ADMIN, S),
    ("GET", "/1.0/reports"): Rule(READ, S),
    ("GET", "/1.0/reports/{name}"): Rule(READ, S),
    # the cluster: members are read by every identity (where things run), changed by admins
    ("GET", "/1.0/cluster"): Rule(READ, S),
    ("POST", "/1.0/cluster"): Rule(ADMIN, S),
    ("POST", "/1.0/cluster/join-tokens"): Rule(ADMIN, S),
    ("POST", "/1.0/cluster/join"): Rule(ADMIN, S),
    ("GET", "/1.0/cluster/members"): Rule(READ, S),
    ("GET", "/1.0/cluster/members/{name}"): Rule(READ, S),
    ("PATCH", "/1.0/cluster/members/{name}"): Rule(ADMIN, S),
    ("DELETE", "/1.0/cluster/members/{name}"): Rule(ADMIN, S),
    ("POST", "/1.0/cluster/members/{name}/evacuate"): Rule(ADMIN, S),
    ("POST", "/1.0/cluster/recover"): Rule(ADMIN, S),
    ("GET", "/1.0/cluster/rebalance"): Rule(READ, S),
    ("POST", "/1.0/cluster/rebalance"): Rule(ADMIN, S),
    ("GET", "/1.0/cluster/config"): Rule(READ, S),
    ("PATCH", "/1.0/cluster/config"): Rule(ADMIN, S),
    ("POST", "/1.0/cluster/members/{name}/restore"): Rule(ADMIN, S),
}

_PARAM = re.compile(r"\{(\w+)(:path)?\}")


def _regex(template: str) -> re.Pattern[str]:
    out, pos = [], 0
    for m in _PARAM.finditer(template):
        out.append(re.escape(template[pos:m.start()]))
        out.append(f"(?P<{m.group(1)}>.+)" if m.group(2) else f"(?P<{m.group(1)}>[^/]+)")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out) + r"\Z")


def plain(template: str) -> str:
    """The template as OpenAPI spells it (no ``:path``)."""
    return template.replace(":path}", "}")


# by method: literal templates first (``/images/app`` before ``/images/{ref:path}``)
_BY_METHOD: dict[str, list[tuple[re.Pattern[str], str, Rule]]] = {}
for (_method, _template), _rule in sorted(RULES.items(), key=lambda kv: kv[0][1].count("{")):
    _BY_METHOD.setdefault(_method, []).append((_regex(_template), _template, _rule))


def lookup(method: str, path: str) -> tuple[str, Rule] | None:
    """The template and rule of a request (``WS`` for a websocket), or None."""
    found = match(method, path)
    return None if found is None else (found[0], found[1])


def match(method: str, path: str) -> tuple[str, Rule, dict[str, str]] | None:
    """The template, rule and path parameters of a request, or None."""
    for regex, template, rule in _BY_METHOD.get(method, ()):
        if m := regex.match(path):
            return template, rule, m.groupdict()
    return None
