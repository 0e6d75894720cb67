#!/usr/bin/env bash
# node-up.sh DIR: starts one Kubernetes node next to the API server kube-up.sh runs in DIR:
# containerd (Debian's package, its own root/state/socket under DIR/node), kubelet and
# kube-scheduler v1.20.2 (built by build-kube.sh). Everything lives in DIR/node; stop it with
# node-down.sh DIR, which also removes the host paths kubelet and containerd created and
# restores the sysctls kubelet changed.
#
# The node is named `localhost` and registered with the taint keymount.dev/test-node=:NoSchedule,
# so only pods that tolerate it (the node tests' own pods, and DaemonSets tolerating everything)
# land on it. No CNI: only hostNetwork pods run, and the node stays NotReady (kube-up.sh runs no
# node-lifecycle controller and no TaintNodesByCondition admission, so nothing evicts them).
# Images: no registry; import OCI archives with
#   ctr --address DIR/node/containerd/containerd.sock -n k8s.io images import FILE
# The pod sandbox ("pause") image is KEYMOUNT_NODE_SANDBOX_IMAGE (default: the test box image
# scripts/image builds); it must be imported before the first pod starts.
#
# Only one node per machine: kubelet hard-codes a few host paths (/var/log/pods,
# /var/log/containers, /var/lib/kubelet/device-plugins) and the runc shim /run/containerd/s.
# A lock (/tmp/keymount-testbed-node.lock, held by the watchdog or the caller) serialises nodes.
#
# Writes DIR/node/env (shell-sourceable: KEYMOUNT_NODE_NAME, KEYMOUNT_NODE_ROOT_DIR,
# KEYMOUNT_NODE_CONTAINERD, KEYMOUNT_NODE_KUBELET_PORT) and prints its path last on stdout.
#
# Environment:
#   KEYMOUNT_TESTBED_CACHE       cache root of build-kube.sh (default /var/cache/keymount-testbed)
#   KEYMOUNT_TESTBED_OWNER_PID   a watchdog runs node-down.sh once that process has exited
#   KEYMOUNT_NODE_SANDBOX_IMAGE  the pod sandbox image (default keymount.test/testbox:1)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
say() { echo "node-up: $*" >&2; }
die() { echo "node-up: ERROR: $*" >&2; exit 1; }

[[ $# == 1 ]] || die "usage: node-up.sh DIR (a directory kube-up.sh started)"
DIR=$(cd "$1" && pwd)
[[ -f $DIR/env ]] || die "$DIR/env missing: start the API server with kube-up.sh $DIR first"
# shellcheck disable=SC1091
. "$DIR/env"
NODE=$DIR/node
BIN=${KEYMOUNT_TESTBED_CACHE:-/var/cache/keymount-testbed}/v1.20.2/bin
NAME=localhost
SANDBOX=${KEYMOUNT_NODE_SANDBOX_IMAGE:-keymount.test/testbox:1}

for b in kubelet kube-scheduler; do
    [[ -x $BIN/$b ]] || die "$BIN/$b missing: run scripts/testbed/build-kube.sh (it builds kubelet and kube-scheduler too)"
done
for c in containerd containerd-shim-runc-v2 runc ctr; do
    command -v "$c" >/dev/null 2>&1 \
        || die "'$c' not found: run scripts/deps.sh (apt-get install -y containerd runc)"
done
[[ $(id -u) == 0 ]] || die "a node needs root (kubelet and containerd mount and make namespaces)"

ours() { # pid: alive, not a zombie, started with NODE in its arguments
    local pid=$1
    [[ -n $pid && -d /proc/$pid ]] || return 1
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$NODE/"
}

if [[ -f $NODE/env ]]; then
    running=1
    for p in containerd kubelet kube-scheduler; do
        ours "$(cat "$NODE/$p.pid" 2>/dev/null || true)" || running=0
    done
    if [[ $running == 1 ]]; then
        say "already running in $NODE"
        echo "$NODE/env"
        exit 0
    fi
    say "stale node in $NODE; stopping what is left and starting afresh"
    "$HERE/node-down.sh" "$DIR" >&2 || true
fi

# --- one node per machine -------------------------------------------------------------------
LOCK=/tmp/keymount-testbed-node.lock
exec 7>>"$LOCK"
if ! flock -w 300 7; then
    die "another test node holds $LOCK (pid $(cat "$LOCK.owner" 2>/dev/null || echo '?')) for 300 s"
fi
echo "$NODE" >"$LOCK.owner"

rm -rf "$NODE"
mkdir -p "$NODE"
chmod 700 "$NODE"

# --- what kubelet and containerd change on the host, to restore on stop --------------------
# Paths: which of them exist now (node-down.sh removes the ones that did not, and anything
# new below the ones that did). Sysctls: their values now.
HOST_PATHS=(/var/log/pods /var/log/containers /var/lib/kubelet /var/lib/kubelet/device-plugins
    /run/containerd /run/containerd/s /run/containerd/runc /opt/containerd /etc/cni/net.d /opt/cni/bin)
SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
    kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
{
    for p in "${HOST_PATHS[@]}"; do
        if [[ -e $p ]]; then
            echo "existed $p"
            if [[ -d $p ]]; then find "$p" -mindepth 1 -maxdepth 1 -printf 'entry %p\n' 2>/dev/null || true; fi
        else
            echo "absent $p"
        fi
    done
} >"$NODE/host-paths"
for s in "${SYSCTLS[@]}"; do
    v=$(sysctl -n "$s" 2>/dev/null) && echo "$s=$v"
done >"$NODE/host-sysctls"

# --- certificates: kubelet's client (system:node:NAME), the scheduler's ------------------------
PKI=$DIR/pki
(
    cd "$PKI"
    ossl() { openssl "$@" 2>/dev/null; }
    leaf() { # name subject
        [[ -f $1.crt ]] && return 0
        ossl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
        printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
            'extendedKeyUsage=clientAuth' >"$1.ext"
        ossl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile "$1.ext" -out "$1.crt"
        rm -f "$1.csr" "$1.ext"
        chmod 600 "$1.key"
    }
    leaf "node-$NAME" "/O=system:nodes/CN=system:node:$NAME"
    leaf scheduler "/CN=system:kube-scheduler"
) || die "openssl failed making the node's certificates in $PKI"

# shellcheck source=scripts/testbed/kubeconfig.sh
. "$HERE/kubeconfig.sh"
kubeconfig() { # file user cert key
    write_kubeconfig "$1" "$KEYMOUNT_TESTBED_API_URL" "$PKI/ca.crt" "$2" "$3" "$4"
}
kubeconfig "$NODE/kubelet.kubeconfig" "system:node:$NAME" "$PKI/node-$NAME.crt" "$PKI/node-$NAME.key"
kubeconfig "$NODE/scheduler.kubeconfig" system:kube-scheduler "$PKI/scheduler.crt" "$PKI/scheduler.key"

start() { # name args...
    local name=$1
    shift
    setsid "$@" </dev/null >"$NODE/$name.log" 2>&1 7>&- &
    echo $! >"$NODE/$name.pid"
}
wait_for() { # seconds command...
    local secs=$1 i
    shift
    for ((i = 0; i < secs * 5; i++)); do
        "$@" && return 0
        sleep 0.2
    done
    return 1
}
fail_start() { # name
    say "$1 did not come up; last lines of $NODE/$1.log:"
    tail -25 "$NODE/$1.log" >&2 || true
    "$HERE/node-down.sh" "$DIR" >&2 || true
    die "$1 failed to start (log: $NODE/$1.log)"
}

# --- containerd ------------------------------------------------------------------------------
CD=$NODE/containerd
mkdir -p "$CD/root" "$CD/state" "$CD/runc" "$CD/opt" "$CD/cni/bin" "$CD/cni/conf"
cat >"$CD/config.toml" <<EOF
version = 2
root = "$CD/root"
state = "$CD/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$CD/containerd.sock"
[ttrpc]
  address = "$CD/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$CD/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$SANDBOX"
  # These VMs withhold CAP_SYS_RESOURCE: without this, runc fails with
  # "can't get final child's PID from pipe: EOF".
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "$CD/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CD/cni/bin"
    conf_dir = "$CD/cni/conf"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = ""
EOF
say "starting containerd ($CD/containerd.sock)"
start containerd containerd --config "$CD/config.toml"
wait_for 30 ctr --address "$CD/containerd.sock" version >/dev/null 2>&1 || fail_start containerd

# --- kubelet -------------------------------------------------------------------------------
read -r KUBELET_PORT HEALTHZ_PORT SCHED_PORT <<<"$(python3 - <<'EOF'
import socket
socks = []
for _ in range(3):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)"
ROOT=$NODE/kubelet
mkdir -p "$ROOT" "$NODE/kubelet-pki"
# Bidirectional mount propagation (the CSI driver's pods dir) needs a shared source mount; the
# host's / may be private: make kubelet's root dir its own shared bind mount (node-down.sh
# unmounts it with everything else below DIR/node).
mount --bind "$ROOT" "$ROOT" && mount --make-rshared "$ROOT" \
    || die "could not make $ROOT a shared bind mount (mount --bind; mount --make-rshared)"
cat >"$NODE/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: 127.0.0.1
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $HEALTHZ_PORT
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: Webhook
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
failSwapOn: false
makeIPTablesUtilChains: false
featureGates:
  CSIServiceAccountToken: true
syncFrequency: 10s
fileCheckFrequency: 10s
nodeStatusUpdateFrequency: 10s
# The node shares the machine's disk with cargo builds: never collect the imported images,
# and evict only when the disk is really full (a percentage of a large disk evicts pods
# while a cold build runs next to the tests).
imageGCHighThresholdPercent: 100
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "64Mi"
  imagefs.available: "64Mi"
serializeImagePulls: false
volumeStatsAggPeriod: 0s
EOF
say "starting kubelet (node $NAME, root dir $ROOT, port $KUBELET_PORT)"
# The command line is kept in DIR/node/kubelet.sh: node-restart-kubelet.sh starts it again.
cat >"$NODE/kubelet.sh" <<EOF
#!/bin/sh
exec "$BIN/kubelet" \\
    --config="$NODE/kubelet-config.yaml" \\
    --kubeconfig="$NODE/kubelet.kubeconfig" \\
    --root-dir="$ROOT" --cert-dir="$NODE/kubelet-pki" --volume-plugin-dir="$NODE/flexvolume" \\
    --hostname-override="$NAME" \\
    --register-with-taints=keymount.dev/test-node=:NoSchedule \\
    --container-runtime=remote --container-runtime-endpoint="unix://$CD/containerd.sock" \\
    --runtime-request-timeout=2m \\
    --v=2
EOF
chmod 0755 "$NODE/kubelet.sh"
start kubelet "$NODE/kubelet.sh"
healthz() { curl -sf --max-time 2 "http://127.0.0.1:$HEALTHZ_PORT/healthz" -o /dev/null; }
wait_for 60 healthz || fail_start kubelet

say "starting kube-scheduler"
start kube-scheduler "$BIN/kube-scheduler" \
    --kubeconfig="$NODE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$NODE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$NODE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --port=0 \
    --leader-elect=false \
    --v=1
wait_for 30 curl -sfk --max-time 2 "https://127.0.0.1:$SCHED_PORT/healthz" -o /dev/null || fail_start kube-scheduler

admin() { curl -sf --max-time 3 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" "$@"; }
wait_for 60 admin "$KEYMOUNT_TESTBED_API_URL/api/v1/nodes/$NAME" -o /dev/null || fail_start kubelet

cat >"$NODE/env.tmp" <<EOF
export KEYMOUNT_NODE_NAME=$NAME
export KEYMOUNT_NODE_DIR=$NODE
export KEYMOUNT_NODE_ROOT_DIR=$ROOT
export KEYMOUNT_NODE_CONTAINERD=$CD/containerd.sock
export KEYMOUNT_NODE_KUBELET_PORT=$KUBELET_PORT
export KEYMOUNT_NODE_KUBELET_HEALTHZ_PORT=$HEALTHZ_PORT
EOF
mv -f "$NODE/env.tmp" "$NODE/env"

if [[ -n ${KEYMOUNT_TESTBED_OWNER_PID:-} ]]; then
    owner=$KEYMOUNT_TESTBED_OWNER_PID
    # The watchdog keeps the node lock (fd 7) until the node is down.
    setsid bash -c '
        owner=$1 dir=$2 down=$3
        while [ -d /proc/$owner ] && [ "$(awk "{print \$3}" /proc/$owner/stat 2>/dev/null)" != Z ]; do sleep 1; done
        "$down" "$dir" >/dev/null 2>&1
    ' keymount-node-watchdog "$owner" "$DIR" "$HERE/node-down.sh" </dev/null >/dev/null 2>&1 &
    echo $! >"$NODE/watchdog.pid"
    say "watchdog $(cat "$NODE/watchdog.pid") stops this node when process $owner exits"
fi

say "ready: node $NAME (source $NODE/env)"
echo "$NODE/env"
