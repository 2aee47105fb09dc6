#!/usr/bin/env bash
# The whole host preparation, in order: packages, container engines, libvirt/QEMU.
# `isobench setup` and .ci/setup both run this one copy. Idempotent.
set -euo pipefail
here=$(dirname "$0")
bash "$here/packages.sh"
bash "$here/containers.sh"
bash "$here/libvirt.sh"
