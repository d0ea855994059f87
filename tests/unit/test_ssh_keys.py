"""SSH keys for the guest: what is accepted, what is refused before anything is created."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from cumulo.api.app import create_app
from cumulo.domain.ssh_keys import parse_keys
from cumulo.drivers.base import InstanceSpec
from cumulo.drivers.vm.driver import kernel_append
from cumulo.errors import InvalidInputError
from cumulo.services.host import build_services
from tests.unit.conftest import HOST, add_test_image

# a throwaway public key made with ssh-keygen -t ed25519 (the private half was deleted)
ED = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOu3ira+W2g3CLS4G4oMUNW2VrWydKWecpE9acei1ORd"
      " test@cumulo")


def test_a_public_key_file_with_comments_and_blank_lines_gives_its_keys() -> None:
    assert parse_keys(f"# mine\n\n{ED}\n") == (ED,)
    assert parse_keys(ED.rsplit(" ", 1)[0]) == (ED.rsplit(" ", 1)[0],)


@pytest.mark.parametrize(("text", "message"), [
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1r\n", "private SSH key"),
    ("SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU", "not an SSH public key"),
    ("ssh-ed25519 not!base64", "damaged base64"),
    ("ssh-rsa " + ED.split()[1], "says ssh-rsa but its body is a ssh-ed25519"),
    ("", "no SSH public key"),
    ("\n".join([ED] * 9), "at most 8"),
])
def test_what_is_not_a_public_key_is_refused_with_the_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_keys(text)


def test_the_keys_travel_on_the_kernel_command_line_for_init(tmp_path: Path) -> None:
    spec = InstanceSpec(host_id="p_vm", hostname="vm", instance_dir=tmp_path, rootfs=tmp_path,
                        command=["true"], ssh_keys=(ED,))
    arg = next(a for a in kernel_append(spec).split() if a.startswith("cumulo.ssh="))
    assert base64.b64decode(arg.split("=", 1)[1]).decode() == ED + "\n"
    assert "cumulo.hostname=vm" in kernel_append(spec).split()


def test_the_api_refuses_a_bad_key_and_a_key_for_a_container_creating_nothing(
        tmp_path: Path) -> None:
    svc = build_services(tmp_path / "state", tmp_path / "run", HOST,
                         driver_kinds={"container": "fake", "vm": "vm"})
    add_test_image(svc)
    try:
        with TestClient(create_app(svc)) as api:
            for extra, message in [
                ({"type": "vm", "ssh_key": "ssh-ed25519 AAAA"}, "damaged base64"),
                ({"type": "container", "ssh_key": ED}, "does not apply to this container"),
            ]:
                r = api.post("/1.0/instances", json={"name": "k", "image": "testimg", **extra})
                assert r.status_code == 400 and message in r.json()["error"], r.text
            assert api.get("/1.0/instances").json() == []
    finally:
        svc.close()
