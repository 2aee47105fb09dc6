"""Root filesystems as the unit of "same bytes" for a user's own workloads (issue 16).

The public API of the rootfs package; its modules are its own:

- `_common`: the store (<cache>/rootfs/<key>/, names as symlinks), the `Rootfs` record
  and its outputs (a tar, an ext4 image), the helpers the builder and importer share;
- `builder`: `isobench rootfs build`, a Debian tree from mmdebstrap;
- `importer`: `isobench rootfs import`, a docker or podman image's filesystem.
"""

from bench.rootfs._common import (
    UNMARKED_GRACE_S,
    Rootfs,
    RootfsError,
    check_name,
    ext4_geometry,
    load,
    mke2fs_argv,
    names,
    parse_dpkg_query,
    remove,
    store_dir,
    sweep,
    tree_hash,
    tree_usage,
)
from bench.rootfs.builder import build, parse_copy
from bench.rootfs.importer import import_image

__all__ = [
    "UNMARKED_GRACE_S",
    "Rootfs",
    "RootfsError",
    "build",
    "check_name",
    "ext4_geometry",
    "import_image",
    "load",
    "mke2fs_argv",
    "names",
    "parse_copy",
    "parse_dpkg_query",
    "remove",
    "store_dir",
    "sweep",
    "tree_hash",
    "tree_usage",
]
