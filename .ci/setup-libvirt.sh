#!/usr/bin/env bash
# The one copy is shipped in the package (isobench setup runs it too): bench/hostprep/libvirt.sh
exec bash "$(dirname "$0")/../bench/hostprep/libvirt.sh" "$@"
