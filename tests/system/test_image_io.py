"""cumulo image import / export through the real CLI and daemon: tarballs, OCI layouts, disks.

Every input is made here, offline: busybox-static for a rootfs, umoci for an OCI
layout, qemu-img for disks. Bad input (truncated, corrupt, wrong checksum) must
be a one-line error that leaves no image and no staging dir behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.system.conftest import Daemon

pytestmark = [pytest.mark.system, pytest.mark.root]


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _rootfs(top: Path, marker: str) -> Path:
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp"):
        (top / d).mkdir(parents=True, exist_ok=True)
    shutil.copy("/bin/busybox", top / "bin/busybox")
    for applet in ("sh", "cat", "sleep", "ls"):
        (top / "bin" / applet).symlink_to("busybox")
    (top / "etc/marker").write_text(marker + "\n")
    (top / "etc/os-release").write_text('ID=tiny\nVERSION_ID="1.0"\nPRETTY_NAME="Tiny 1.0"\n')
    return top


def _tarball(tmp: Path, name: str, mode: str) -> Path:
    src = _rootfs(tmp / f"src-{name}", "from a tarball")
    out = tmp / name
    with tarfile.open(out, mode) as tar:
        tar.add(src, arcname=".")
    return out


def _nothing_left(daemon: Daemon) -> None:
    with daemon.client() as c:
        assert c.images() == []
    staging = daemon.state_dir / "images" / ".staging"
    assert not staging.is_dir() or list(staging.iterdir()) == []
    assert [p.name for p in (daemon.state_dir / "images").iterdir()] in ([], [".staging"])


def _fails(daemon: Daemon, *args: str, match: str) -> None:
    r = daemon.cli(*args, check=False)
    assert r.returncode == 1 and r.stderr.startswith("Error: ") and match in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.runtime
def test_rootfs_tarballs_import_run_and_export(daemon: Daemon, tmp_path: Path) -> None:
    gz = _tarball(tmp_path, "root.tar.gz", "w:gz")
    r = daemon.cli("image", "import", str(gz), "--alias", "tiny", "--sha256", _sha(gz))
    assert "Imported tiny" in r.stderr and "container" in r.stderr
    info = json.loads(daemon.cli("image", "info", "tiny", "--format", "json").stdout)
    assert (info["kind"], info["os"], info["release"]) == ("container", "tiny", "1.0")
    assert info["properties"]["file_sha256"] == _sha(gz)
    for name, mode in (("root.tar.xz", "w:xz"), ("root.tar", "w")):
        other = _tarball(tmp_path, name, mode)
        daemon.cli("image", "import", str(other), "--alias", name.replace(".", "-"))
    rows = json.loads(daemon.cli("image", "list", "--format", "json").stdout)
    assert len(rows) == 1   # the same tree three times: one image with three aliases
    assert "KIND" in daemon.cli("image", "list").stdout

    daemon.cli("launch", "tiny", "t1")
    assert daemon.cli("exec", "t1", "--", "cat", "/etc/marker").stdout == "from a tarball\n"
    daemon.cli("delete", "t1", "--force")

    out = tmp_path / "export.tar.gz"
    r = daemon.cli("image", "export", "tiny", str(out))
    assert "tar.gz" in r.stderr and not Path(str(out) + ".part").exists()
    with tarfile.open(out) as tar:
        names = set(tar.getnames())
        assert {"./bin/busybox", "./etc/marker"} <= names
        assert tar.getmember("./bin/busybox").uid == 0
    daemon.cli("image", "delete", "tiny")
    _nothing_left(daemon)
    # what was exported imports again as the very same image
    daemon.cli("image", "import", str(out), "--alias", "again")
    again = json.loads(daemon.cli("image", "info", "again", "--format", "json").stdout)
    assert again["fingerprint"] == info["fingerprint"]


def test_bad_files_and_checksums_leave_nothing(daemon: Daemon, tmp_path: Path) -> None:
    gz = _tarball(tmp_path, "root.tar.gz", "w:gz")
    _fails(daemon, "image", "import", str(gz), "--sha256", "0" * 64, match="checksum mismatch")
    _fails(daemon, "image", "import", str(gz), "--sha256", "xyz", match="not 64 hex digits")
    _nothing_left(daemon)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    _fails(daemon, "image", "import", str(cut), match="truncated or corrupt")
    junk = tmp_path / "notes.txt"
    junk.write_text("hello\n" * 100)
    _fails(daemon, "image", "import", str(junk), match="is not a rootfs or OCI tarball")
    _fails(daemon, "image", "import", str(tmp_path / "missing.tar"), match="no such file")
    _fails(daemon, "image", "import", str(tmp_path), match="not an OCI image layout")
    qcow = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow), "64M"], check=True)
    bad = tmp_path / "bad.qcow2"
    data = bytearray(qcow.read_bytes())
    data[4:8] = b"\0\0\0\x63"   # qcow2 version 99
    bad.write_bytes(bytes(data))
    _fails(daemon, "image", "import", str(bad), match="cannot read the qcow2 disk")
    ext = tmp_path / "ext.qcow2"   # qcow2 disks that point at other files of the host
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o",
                    f"data_file={tmp_path / 'ext.data'}", str(ext), "16M"], check=True)
    _fails(daemon, "image", "import", str(ext), match="external data file")
    child = tmp_path / "child.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(qcow), "-F", "qcow2",
                    str(child)], check=True)
    _fails(daemon, "image", "import", str(child), match="backing file")
    short = tmp_path / "short.qcow2"
    short.write_bytes(qcow.read_bytes()[:100])
    _fails(daemon, "image", "import", str(short), match="qcow2")
    _fails(daemon, "image", "export", "nosuch", str(tmp_path / "x.tar.gz"),
           match="image 'nosuch' not found")
    assert not (tmp_path / "x.tar.gz").exists() and not (tmp_path / "x.tar.gz.part").exists()
    _nothing_left(daemon)
    with daemon.client() as c:
        assert all(op["status"] == "failure" for op in c.operations())


def test_disk_images_import_and_export(daemon: Daemon, tmp_path: Path) -> None:
    qcow = tmp_path / "d.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow), "64M"], check=True)
    daemon.cli("image", "import", str(qcow), "--alias", "disk1", "--sha256", _sha(qcow))
    info = json.loads(daemon.cli("image", "info", "disk1", "--format", "json").stdout)
    assert info["kind"] == "vm-disk" and info["fingerprint"] == _sha(qcow)
    assert info["properties"]["format"] == "qcow2"
    assert info["properties"]["virtual_size"] == str(64 << 20)
    assert "vm-disk" in daemon.cli("image", "info", "disk1").stdout
    raw = tmp_path / "d.raw"
    with raw.open("wb") as f:
        f.truncate(8 << 20)
    daemon.cli("image", "import", str(raw), "--alias", "disk2")
    info2 = json.loads(daemon.cli("image", "info", "disk2", "--format", "json").stdout)
    assert info2["properties"]["format"] == "raw" and info2["size"] == 8 << 20
    out = tmp_path / "out.qcow2"
    r = daemon.cli("image", "export", "disk1", str(out))
    assert "qcow2" in r.stderr and _sha(out) == _sha(qcow)
    _fails(daemon, "launch", "disk1", "x", match="image 'disk1' is a vm-disk image: a container "
           "needs a root filesystem image (app, container)")
    with daemon.client() as c:
        assert c.instances() == []


def _oci_layout(tmp: Path) -> Path:
    layout, bundle = tmp / "oci", tmp / "bundle"
    subprocess.run(["umoci", "init", "--layout", str(layout)], check=True)
    subprocess.run(["umoci", "new", "--image", f"{layout}:v1"], check=True)
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:v1", str(bundle)], check=True)
    _rootfs(bundle / "rootfs", "from an OCI layer")
    subprocess.run(["umoci", "repack", "--image", f"{layout}:v1", str(bundle)], check=True)
    subprocess.run(["umoci", "config", "--image", f"{layout}:v1",
                    "--config.entrypoint", "/bin/busybox", "--config.cmd", "sleep",
                    "--config.cmd", "300"], check=True)
    shutil.rmtree(bundle)
    return layout


@pytest.mark.runtime
def test_oci_layout_directory_and_tar(daemon: Daemon, tmp_path: Path) -> None:
    layout = _oci_layout(tmp_path)
    r = daemon.cli("image", "import", str(layout), "--alias", "oci1")
    assert "Imported oci1" in r.stderr
    info = json.loads(daemon.cli("image", "info", "oci1", "--format", "json").stdout)
    assert info["command"] == ["/bin/busybox", "sleep", "300"]
    assert info["properties"]["source"] == "oci" and info["properties"]["oci_ref"] == "v1"
    daemon.cli("launch", "oci1", "o1")
    assert daemon.cli("exec", "o1", "--", "cat", "/etc/marker").stdout == "from an OCI layer\n"
    daemon.cli("delete", "o1", "--force")
    tar = tmp_path / "layout.tar"
    with tarfile.open(tar, "w") as t:
        t.add(layout, arcname="oci")
    daemon.cli("image", "import", str(tar), "--alias", "oci2")
    info2 = json.loads(daemon.cli("image", "info", "oci2", "--format", "json").stdout)
    assert info2["fingerprint"] == info["fingerprint"]


@pytest.mark.runtime
def test_publish_a_stopped_container(daemon: Daemon, tmp_path: Path) -> None:
    gz = _tarball(tmp_path, "root.tar.gz", "w:gz")
    daemon.cli("image", "import", str(gz), "--alias", "tiny")
    daemon.cli("launch", "tiny", "p1")
    daemon.cli("exec", "p1", "--", "sh", "-c",
               "echo changed > /etc/marker; echo new > /root-new; rm /bin/ls; "
               "mkdir -p /home/u && echo mine > /home/u/f")
    r = daemon.cli("publish", "p1", "--alias", "snap", check=False)
    assert r.returncode == 1 and "cannot publish instance 'p1': it is running" in r.stderr
    daemon.cli("stop", "p1", "--timeout", "5")
    r = daemon.cli("publish", "p1", "--alias", "snap")
    assert "Published snap" in r.stderr
    info = json.loads(daemon.cli("image", "info", "snap", "--format", "json").stdout)
    assert info["properties"]["source"] == "publish"
    assert info["properties"]["instance"] == "default/p1"
    rootfs = daemon.state_dir / "images" / info["fingerprint"] / "rootfs"
    assert (rootfs / "etc/marker").read_text() == "changed\n"
    assert (rootfs / "root-new").read_text() == "new\n"
    assert not (rootfs / "bin/ls").is_symlink()   # deleted in the container: gone
    assert (rootfs / "home/u/f").stat().st_uid == 0 and rootfs.stat().st_uid == 0
    daemon.cli("launch", "snap", "p2")
    assert daemon.cli("exec", "p2", "--", "cat", "/etc/marker").stdout == "changed\n"
    r = daemon.cli("image", "delete", "snap", check=False)
    assert r.returncode == 1 and "image 'snap' is used by default/p2" in r.stderr
    _fails(daemon, "publish", "p1", "--alias", "Bad Alias", match="invalid alias")
    _fails(daemon, "publish", "nosuch", "--alias", "x", match="not found")
    daemon.cli("delete", "p2", "--force")
    daemon.cli("delete", "p1")
    daemon.cli("launch", "tiny", "p3", "--privileged")   # no id shift to undo
    daemon.cli("exec", "p3", "--", "sh", "-c", "echo privileged > /etc/marker")
    daemon.cli("stop", "p3", "--timeout", "5")
    daemon.cli("publish", "p3", "--alias", "snap3")
    fp3 = json.loads(daemon.cli("image", "info", "snap3", "--format", "json").stdout)["fingerprint"]
    marker = daemon.state_dir / "images" / fp3 / "rootfs/etc/marker"
    assert marker.read_text() == "privileged\n" and marker.stat().st_uid == 0
    daemon.cli("start", "p3")   # still starts after being published
    daemon.cli("delete", "p3", "--force")
