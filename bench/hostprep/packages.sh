#!/usr/bin/env bash
# Debian/Ubuntu packages isobench and its tests use (as root): the compiler and static
# libc for the probes, Chromium for the report tests, containerd and CNI for `cri`,
# mmdebstrap for `isobench rootfs build`, LXC, perf for validate's accuracy check and
# openssh-server for the fleet tests' namespace hosts. Only what is missing is
# installed, so a prepared host passes through in seconds.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
log() { echo "setup: $*" >&2; }

pkgs=(gcc libc6-dev busybox-static util-linux procps e2fsprogs chromium pkg-config
      containerd containernetworking-plugins  # these two: `cri` (its own containerd, CNI ptp)
      mmdebstrap  # `isobench rootfs build` (a Debian tree from the host's apt sources)
      lxc  # the `lxc` kind: lxc-execute, init.lxc, LXC's common.conf (liblxc1, liblxc-common)
      linux-perf  # validate's accuracy check: `perf bench syscall basic` against the bursts
      openssh-server)  # the fleet tests: one sshd per namespace host
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [[ ${CI:-} == true || ${#missing[@]} -gt 0 ]]; then
    log "apt-get update"
    apt-get update -q >&2
fi
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
fi
