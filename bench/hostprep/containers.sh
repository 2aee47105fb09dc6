#!/usr/bin/env bash
# Container engines for the integration tests: Debian's docker.io, gVisor (runsc), podman,
# crun and runc; a dockerd that knows the runsc runtimes; podman's config. Idempotent: run
# it as often as you like (.ci/run calls it after `apt-get update`).
set -euo pipefail

log() { echo "setup-containers: $*" >&2; }

# ---- packages (only what is missing, so a warm machine does not touch apt)
need=()
for pair in docker.io:dockerd runsc:runsc podman:podman crun:crun runc:runc; do
    pkg=${pair%%:*} bin=${pair##*:}
    command -v "$bin" >/dev/null 2>&1 || need+=("$pkg")
done
if ((${#need[@]})); then
    log "installing ${need[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        "${need[@]}" busybox-static >&2
fi

# ---- /etc/docker/daemon.json: merge the runsc runtimes into whatever is there
#   runsc needs --network=host on this kind of host (its netstack cannot set up the veth);
#   runsc-kvm hangs on hosts without usable KVM: the tests use it for the timeout path.
mkdir -p /etc/docker
changed=$(python3 - <<'EOF'
import json, pathlib
path = pathlib.Path("/etc/docker/daemon.json")
try:
    cfg = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
except json.JSONDecodeError:
    cfg = {}
want = {
    "runsc": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=host"]},
    "runsc-kvm": {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=host", "--platform=kvm"]},
}
runtimes = cfg.setdefault("runtimes", {})
changed = any(runtimes.get(k) != v for k, v in want.items())
runtimes.update(want)
if changed:
    path.write_text(json.dumps(cfg, indent=2) + "\n")
print("yes" if changed else "no")
EOF
)

# ---- dockerd: start it in the background when it does not answer; reload runtimes if needed
docker_up() { timeout 5 docker info >/dev/null 2>&1; }
if docker_up; then
    if [[ $changed == yes ]]; then
        log "daemon.json changed: reloading dockerd (SIGHUP)"
        pkill -HUP -x dockerd || true
        sleep 1
    fi
else
    if command -v systemctl >/dev/null 2>&1 && systemctl start docker >/dev/null 2>&1; then
        log "started docker with systemctl"
    else
        log "starting dockerd in the background (log: /tmp/dockerd.log)"
        nohup dockerd >/tmp/dockerd.log 2>&1 </dev/null &
        disown || true
    fi
    for _ in $(seq 1 60); do
        docker_up && break
        sleep 1
    done
    if ! docker_up; then
        log "dockerd did not answer within 60 s; last log lines:"
        tail -n 20 /tmp/dockerd.log >&2 || true
        exit 1
    fi
fi
log "dockerd $(docker version --format '{{.Server.Version}}') runtimes: $(docker info --format '{{range $k, $v := .Runtimes}}{{$k}} {{end}}')"

# ---- podman: nothing to start (the env uses the CLI); it needs a policy that accepts
#   locally imported images, which Debian ships in /etc/containers/policy.json.
if [[ ! -s /etc/containers/policy.json ]]; then
    mkdir -p /etc/containers
    echo '{"default": [{"type": "insecureAcceptAnything"}]}' >/etc/containers/policy.json
fi
podman --version >&2
