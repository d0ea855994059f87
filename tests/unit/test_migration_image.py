"""Migrating to a host that lacks the instance's image: one line saying which host lacks
which image and how to copy it there (images do not follow instances yet)."""

from __future__ import annotations

from cumulo.domain.models import Image
from cumulo.errors import ConflictError
from cumulo.services.migrations import image_missing

FP = "8ccda4addf99" + "0" * 52


def test_the_message_names_host_image_and_the_commands() -> None:
    err = image_missing("b", "ct", Image(fingerprint=FP, kind="container", aliases=["busybox"]))
    assert isinstance(err, ConflictError)
    assert str(err) == (
        "host 'b' lacks image busybox (8ccda4addf99), which instance 'ct' runs from: copy it"
        " there first (here: `cumulo image export busybox busybox.tar.gz`; on b:"
        " `cumulo image import busybox.tar.gz --alias busybox`), then migrate again")


def test_an_image_without_alias_or_a_disk_image() -> None:
    msg = str(image_missing("far", "vm1", Image(fingerprint=FP, kind="vm-disk",
                                                properties={"format": "raw"})))
    assert "lacks image 8ccda4addf99 (8ccda4addf99)" in msg
    assert "`cumulo image export 8ccda4addf99 8ccda4addf99.raw`" in msg
    assert "`cumulo image import 8ccda4addf99.raw`)" in msg and "\n" not in msg
    slash = str(image_missing("b", "d", Image(fingerprint=FP, aliases=["debian/12"])))
    assert "export debian/12 debian-12.tar.gz" in slash
