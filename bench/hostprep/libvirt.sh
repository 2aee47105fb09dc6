#!/usr/bin/env bash
# Idempotent setup for the VM environments (libvirt, qemu): packages, libvirt-python,
# virtlogd + libvirtd started, and (on hosts without /boot) Debian's kernel package
# unpacked into isobench's cache, where isobench looks for a guest kernel.
set -u

GUEST_DIR=${ISOBENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/isobench}/guest-kernel
URI=qemu:///system

need_apt=()
for pkg in qemu-system-x86 libvirt-daemon-system libvirt-clients libvirt-dev pkg-config \
           e2fsprogs busybox-static; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
if ((${#need_apt[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
fi
python3 -c 'import libvirt' 2>/dev/null || python3 -m pip install -q libvirt-python

# No systemd here: start the daemons by hand, in the background, if not running.
pgrep -x virtlogd >/dev/null || virtlogd -d
pgrep -x libvirtd >/dev/null || libvirtd -d
for _ in $(seq 1 60); do
  virsh -c "$URI" list >/dev/null 2>&1 && break
  sleep 0.5
done
if ! virsh -c "$URI" list >/dev/null; then
  echo "libvirtd did not answer at $URI" >&2
  exit 1
fi

# The guest kernel: Debian's current linux-image package, unpacked once.
if [[ ! -e /boot/vmlinuz-$(uname -r) ]] && ! ls "$GUEST_DIR"/boot/vmlinuz-* >/dev/null 2>&1; then
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-/{print $2; exit}')
  tmp=$(mktemp -d)
  mkdir -p "$GUEST_DIR"
  (cd "$tmp" && apt-get download "$pkg" && dpkg -x "$pkg"_*.deb "$GUEST_DIR") || exit 1
  rm -rf "$tmp"
fi
echo "guest kernel: $(ls /boot/vmlinuz-"$(uname -r)" "$GUEST_DIR"/boot/vmlinuz-* 2>/dev/null | head -n1)"
