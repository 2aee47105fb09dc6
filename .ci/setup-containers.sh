#!/usr/bin/env bash
# The one copy is shipped in the package (isobench setup runs it too): bench/hostprep/containers.sh
exec bash "$(dirname "$0")/../bench/hostprep/containers.sh" "$@"
