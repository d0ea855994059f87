"""cloud-init's NoCloud seed: user-data checked before anything is made, merged with
--cloud-config and --ssh-key, meta-data and network-config as cloud-init reads them."""

from __future__ import annotations

import email

import pytest
import yaml

from cumulo.domain import cloud_init
from cumulo.errors import InvalidInputError

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPx user@host"


@pytest.mark.parametrize(("text", "said"), [
    ("runcmd: [[touch, /x]]\n", "no '#cloud-config' first line"),
    ("hello world\n", "neither a '#cloud-config' YAML document nor a '#!' script"),
    ("#cloud-config\nruncmd: [unclosed\n", "is not YAML (line 3)"),
    ("#cloud-config\n- a\n- b\n", "not a YAML mapping"),
])
def test_user_data_cloud_init_would_ignore_is_refused_in_one_line(text: str, said: str) -> None:
    with pytest.raises(InvalidInputError) as err:
        cloud_init.check_user_data(text)
    assert said in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("text", ["#cloud-config\nruncmd: [[touch, /x]]\n", "#!/bin/sh\necho hi\n",
                                  "#cloud-config\n", "Content-Type: multipart/mixed; b=x\n\n"])
def test_what_cloud_init_runs_is_taken_as_it_is(text: str) -> None:
    assert cloud_init.check_user_data(text) == text


def test_keys_and_cloud_config_merge_into_a_cloud_config() -> None:
    given = "#cloud-config\nssh_authorized_keys: [ssh-rsa AAAA old]\npackages: [htop]\n"
    out = cloud_init.user_data(given, {"packages": ["vim"]}, (KEY,))
    assert out.startswith("#cloud-config\n")
    doc = yaml.safe_load(out)
    assert doc == {"ssh_authorized_keys": ["ssh-rsa AAAA old", KEY], "packages": ["vim"],
                   "disable_root": False}


def test_a_script_gets_the_keys_in_a_second_mime_part() -> None:
    out = cloud_init.user_data("#!/bin/sh\ntouch /x\n", {}, (KEY,))
    parts = [p for p in email.message_from_string(out).walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in parts] == ["text/x-shellscript", "text/cloud-config"]
    assert KEY in yaml.safe_load(parts[1].get_payload())["ssh_authorized_keys"]


def test_nothing_given_is_an_empty_cloud_config() -> None:
    assert yaml.safe_load(cloud_init.user_data(None, {}, ())) == {}


def test_cloud_config_items() -> None:
    assert cloud_init.parse_item("runcmd=[[touch, /x]]") == {"runcmd": [["touch", "/x"]]}
    assert cloud_init.parse_item("package_update=true") == {"package_update": True}
    with pytest.raises(InvalidInputError, match="KEY=VALUE"):
        cloud_init.parse_item("Not A Key=1")
    assert cloud_init.parse_cloud_config("#cloud-config\nhostname: x\n") == {"hostname": "x"}


def test_meta_data_and_network_config() -> None:
    assert yaml.safe_load(cloud_init.meta_data("default_v1", "v1")) == {
        "instance-id": "default_v1", "local-hostname": "v1"}
    net = yaml.safe_load(cloud_init.network_config(["52:54:00:AA:BB:CC"]))
    assert net == {"version": 2, "ethernets": {"eth0": {
        "match": {"macaddress": "52:54:00:aa:bb:cc"}, "dhcp4": True}}}
