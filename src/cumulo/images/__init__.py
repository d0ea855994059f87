"""Image files: the content-addressed rootfs store and the builders that fill it.

Image metadata (names, aliases, who uses what) lives in the store; this package
only touches files under the image root.
"""

from cumulo.images.builders import BUILDERS, build
from cumulo.images.files import ImageFiles, ImageMeta, ImageRecord

__all__ = ["BUILDERS", "ImageFiles", "ImageMeta", "ImageRecord", "build"]
