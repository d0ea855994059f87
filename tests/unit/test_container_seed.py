"""A system container's cloud-init seed: where it goes in the root, who owns it, that
the image's symlinks cannot send it elsewhere, and which launches take the options."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from cumulo.api.app import create_app
from cumulo.domain import cloud_init
from cumulo.domain.models import Image
from cumulo.drivers.base import InstanceSpec
from cumulo.drivers.container import seed
from cumulo.drivers.vm import seed as vm_seed
from cumulo.errors import DriverError
from cumulo.services.host import build_services
from tests.unit.conftest import HOST, LOOP, add_test_image
from tests.unit.test_ssh_keys import ED as KEY

MAC = "0A:58:0A:5D:00:02"


def _spec(root: Path, **kw: object) -> InstanceSpec:
    return InstanceSpec(host_id="default_c1", hostname="c1", instance_dir=root.parent,
                        rootfs=root, command=["/sbin/init"], nics=(("veth0", MAC),),
                        options={"init": "/sbin/init"}, **kw)  # type: ignore[arg-type]


def test_the_seed_is_the_vms_seed_in_nocloud_net(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "var").mkdir(parents=True)
    spec = _spec(root, user_data="#cloud-config\nruncmd: [[touch, /x]]\n",
                 cloud_config={"timezone": "Europe/Paris"}, ssh_keys=(KEY,))
    files = seed.files(spec)
    # one renderer for both kinds: the same text a VM's ISO gets
    assert files == cloud_init.seed_files("default_c1", "c1", [MAC], spec.user_data,
                                          spec.cloud_config, spec.ssh_keys)
    seed.write(root, files, os.getuid())
    where = root / "var/lib/cloud/seed/nocloud-net"
    assert sorted(p.name for p in where.iterdir()) == ["meta-data", "network-config",
                                                       "user-data"]
    assert yaml.safe_load((where / "meta-data").read_text()) == {
        "instance-id": "default_c1", "local-hostname": "c1"}
    net = yaml.safe_load((where / "network-config").read_text())
    assert net["ethernets"]["eth0"]["match"] == {"macaddress": MAC.lower()}
    user = yaml.safe_load((where / "user-data").read_text())
    assert user["runcmd"] == [["touch", "/x"]] and user["timezone"] == "Europe/Paris"
    assert user["ssh_authorized_keys"] == [KEY] and user["disable_root"] is False
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in where.iterdir())
    # written again (a second create on the same root): replaced, no temp file left
    seed.write(root, {**files, "meta-data": "instance-id: other\n"}, os.getuid())
    assert (where / "meta-data").read_text() == "instance-id: other\n"
    assert sorted(p.name for p in where.iterdir()) == ["meta-data", "network-config",
                                                       "user-data"]


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to the container's root needs root")
def test_new_dirs_and_files_belong_to_the_containers_root(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "var/lib").mkdir(parents=True)
    seed.write(root, {"meta-data": "instance-id: x\n"}, 1_000_000)
    assert (root / "var/lib").stat().st_uid == 0      # the image's own: left as it was
    for path in ("var/lib/cloud", "var/lib/cloud/seed", "var/lib/cloud/seed/nocloud-net",
                 "var/lib/cloud/seed/nocloud-net/meta-data"):
        st = (root / path).stat()
        assert (st.st_uid, st.st_gid) == (1_000_000, 1_000_000), path


def test_a_symlinked_dir_in_the_image_is_not_followed(tmp_path: Path) -> None:
    root, outside = tmp_path / "rootfs", tmp_path / "host"
    (root / "var").mkdir(parents=True)
    outside.mkdir()
    (root / "var/lib").symlink_to(outside)            # an image pointing out of its root
    with pytest.raises(DriverError) as err:
        seed.write(root, {"user-data": "#cloud-config\n"}, os.getuid())
    assert "/var/lib/cloud/seed/nocloud-net" in str(err.value) and "\n" not in str(err.value)
    assert list(outside.iterdir()) == []


def test_a_symlinked_seed_file_is_replaced_not_written_through(tmp_path: Path) -> None:
    root, target = tmp_path / "rootfs", tmp_path / "host-file"
    where = root / "var/lib/cloud/seed/nocloud-net"
    where.mkdir(parents=True)
    target.write_text("host's\n")
    (where / "user-data").symlink_to(target)
    (where / ".user-data.cumulo-tmp").symlink_to(target)
    seed.write(root, {"user-data": "#cloud-config\n"}, os.getuid())
    assert target.read_text() == "host's\n"
    assert not (where / "user-data").is_symlink()
    assert (where / "user-data").read_text() == "#cloud-config\n"


def test_vm_and_container_seeds_come_from_one_renderer() -> None:
    # the VM's ISO maker has no text of its own: it asks cloud_init.seed_files
    source = Path(vm_seed.__file__).read_text() + Path(seed.__file__).read_text()
    assert source.count("cloud_init.seed_files(") == 2
    assert "cloud_init.meta_data(" not in source


def test_launch_options_go_to_system_containers_only(tmp_path: Path) -> None:
    svc = build_services(tmp_path / "state", tmp_path / "run", HOST,
                         driver_kinds={"container": "fake"}, net_kind="fake")
    add_test_image(svc)
    fp = "b" * 64
    (svc.images.files.root / fp / "rootfs").mkdir(parents=True)
    svc.store.put_image(Image(fingerprint=fp, os="debian", release="12", architecture="x86_64",
                              command=LOOP, aliases=["sysimg"],
                              properties={"instance": "system", "init": "/sbin/init",
                                          "stop_signal": "SIGRTMIN+3"}))
    seed_opts = {"user_data": "#cloud-config\n{}\n", "cloud_config": {"timezone": "UTC"},
                 "ssh_key": KEY}
    try:
        with TestClient(create_app(svc)) as api:
            for extra, message in [
                ({"image": "testimg", "user_data": "#cloud-config\n"},
                 "are for cloud-init in a VM booting its own disk"),
                ({"image": "testimg", "cloud_config": {"a": 1}}, "or a system container"),
                ({"image": "testimg", "ssh_key": KEY}, "does not apply to this container"),
                # a command makes an application container of a system image
                ({"image": "sysimg", "command": ["sleep", "1"], "user_data": "#!/bin/sh\n"},
                 "or a system container"),
                ({"image": "sysimg", "command": ["sleep", "1"], "ssh_key": KEY},
                 "does not apply to this container"),
                ({"image": "sysimg", "user_data": "hello\n"}, "cloud-init would ignore it"),
            ]:
                r = api.post("/1.0/instances", json={"name": "k", "start": False, **extra})
                assert r.status_code == 400 and message in r.json()["error"], r.text
                assert "\n" not in r.json()["error"]
            assert api.get("/1.0/instances").json() == []
            r = api.post("/1.0/instances", params={"wait": 30},
                         json={"name": "s1", "image": "sysimg", "start": False, **seed_opts})
            assert (r.status_code, r.json()["status"]) == (202, "success"), r.text
            assert [i["name"] for i in api.get("/1.0/instances").json()] == ["s1"]
    finally:
        for inst in svc.store.list_instances():
            svc.instances.drivers[inst.type].delete(inst.host_id,
                                                    svc.instances.instances_dir / inst.host_id)
        svc.close()
