"""cloud-init's NoCloud seed: what goes in meta-data, user-data and network-config.

Pure (no I/O); the only module that imports PyYAML. User-data is checked before
anything is made: cloud-init runs a ``#cloud-config`` YAML mapping, a ``#!`` script
or a MIME multipart message and ignores anything else without a word, so anything
else is refused here with one line. ``--cloud-config`` pieces (YAML files, the
header optional, or ``KEY=VALUE``) and ``--ssh-key`` are merged into the user's
cloud-config; next to a script they become a second part of a MIME message.
"""

from __future__ import annotations

import re
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Any

import yaml

from cumulo.errors import InvalidInputError

HEADER = "#cloud-config"
MAX_BYTES = 256 * 1024               # user-data and cloud-config, each (a seed, not a disk)
_KEY_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
KEYS = "ssh_authorized_keys"


def _load(text: str, what: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(err, "problem", None) or "not valid YAML"
        raise InvalidInputError(f"{what} is not YAML{where}: {problem}") from None


def _size(text: str, what: str) -> None:
    if len(text.encode()) > MAX_BYTES:
        raise InvalidInputError(f"{what} is larger than {MAX_BYTES // 1024} KiB")


def check_user_data(text: str, what: str = "user-data") -> str:
    """``text`` if cloud-init would run it: a #cloud-config mapping, a #! script, MIME."""
    _size(text, what)
    first = text.lstrip("\ufeff").split("\n", 1)[0].strip()
    if first.startswith("#!") or first.lower().startswith("content-type: multipart/"):
        return text
    if first.startswith(HEADER):
        doc = _load(text, what)
        if doc is not None and not isinstance(doc, dict):
            raise InvalidInputError(f"{what} is a #cloud-config but not a YAML mapping"
                                    f" (key: value lines), it is a {type(doc).__name__}")
        return text
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        doc = None
    if isinstance(doc, dict):
        raise InvalidInputError(f"{what} has no '{HEADER}' first line: cloud-init would"
                                " ignore it (add the line, or give it with --cloud-config)")
    raise InvalidInputError(f"{what} is neither a '{HEADER}' YAML document nor a '#!'"
                            " script: cloud-init would ignore it")


def parse_cloud_config(text: str, what: str = "cloud-config") -> dict[str, Any]:
    """A cloud-config document (the #cloud-config line optional): a YAML mapping."""
    _size(text, what)
    doc = _load(text, what)
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise InvalidInputError(f"{what} is not a YAML mapping (key: value lines)")
    return {str(k): v for k, v in doc.items()}


def parse_item(item: str) -> dict[str, Any]:
    """``KEY=VALUE`` (VALUE read as YAML: ``package_update=true``, ``runcmd=[[touch, /x]]``)."""
    key, sep, value = item.partition("=")
    if not sep or not _KEY_RE.match(key):
        raise InvalidInputError(f"--cloud-config {item!r}: give a file or KEY=VALUE"
                                " (a top-level cloud-config key, e.g. package_update=true)")
    return {key: _load(value, f"the value of --cloud-config {key}")}


def merge(*configs: dict[str, Any]) -> dict[str, Any]:
    """Later pieces win key by key; ssh_authorized_keys add up."""
    out: dict[str, Any] = {}
    for config in configs:
        for key, value in config.items():
            if key == KEYS and isinstance(out.get(KEYS), list) and isinstance(value, list):
                value = [*out[KEYS], *(v for v in value if v not in out[KEYS])]
            out[key] = value
    return out


def _dump(config: dict[str, Any]) -> str:
    return f"{HEADER}\n" + yaml.safe_dump(config, default_flow_style=False, sort_keys=False)


def user_data(given: str | None, cloud_config: dict[str, Any],
              ssh_keys: tuple[str, ...] | list[str]) -> str:
    """The seed's user-data: the user's, with the cloud-config pieces and keys merged in.

    SSH keys go to the default user and, as for every other Cumulo VM, to root
    (``disable_root: false``: root's keys without cloud-init's "log in as" prefix).
    """
    extra = dict(cloud_config)
    if ssh_keys:
        extra = merge({"disable_root": False}, extra, {KEYS: list(ssh_keys)})
    if given is None:
        return _dump(extra) if extra else f"{HEADER}\n{{}}\n"
    if not extra:
        return given
    first = given.lstrip("\ufeff").split("\n", 1)[0].strip()
    if first.startswith(HEADER):
        return _dump(merge(parse_cloud_config(given, "user-data"), extra))
    if first.lower().startswith("content-type:"):
        raise InvalidInputError("a MIME user-data cannot take --cloud-config or --ssh-key:"
                                " add them as parts of it")
    # a script: the cloud-config beside it, as a second part of a MIME message
    message = MIMEMultipart()
    message.attach(MIMEText(given, "x-shellscript"))
    message.attach(MIMEText(_dump(extra), "cloud-config"))
    return message.as_string()


def meta_data(instance_id: str, hostname: str) -> str:
    """NoCloud meta-data: the instance id (cloud-init runs once per id) and its name."""
    return yaml.safe_dump({"instance-id": instance_id, "local-hostname": hostname},
                          sort_keys=False)


def network_config(macs: list[str]) -> str:
    """Network config v2: DHCP on each NIC, found by its MAC address."""
    ethernets = {f"eth{i}": {"match": {"macaddress": mac.lower()}, "dhcp4": True}
                 for i, mac in enumerate(macs)}
    return yaml.safe_dump({"version": 2, "ethernets": ethernets}, sort_keys=False)


def seed_files(instance_id: str, hostname: str, macs: list[str], given: str | None,
               cloud_config: dict[str, Any], ssh_keys: tuple[str, ...] | list[str]
               ) -> dict[str, str]:
    """The NoCloud seed's files by name, the same for a VM's ISO and a container's
    /var/lib/cloud/seed/nocloud-net."""
    return {"meta-data": meta_data(instance_id, hostname),
            "user-data": user_data(given, cloud_config, ssh_keys),
            "network-config": network_config(macs)}
