#!/usr/bin/env bash
# kube-up.sh DIR: starts etcd + kube-apiserver + kube-controller-manager (v1.20.2, built by
# build-kube.sh) on free 127.0.0.1 ports, everything (certs, data, logs, pids) inside DIR.
#
# Writes DIR/kubeconfig (admin, system:masters) and DIR/env (shell-sourceable) and prints the
# kubeconfig path on stdout as its last line. If DIR already holds a running, ready instance it
# only prints that path. Stop it with kube-down.sh DIR.
#
# Environment:
#   KEYMOUNT_TESTBED_CACHE      where build-kube.sh cached the binaries (default /var/cache/keymount-testbed)
#   KEYMOUNT_TESTBED_OWNER_PID  if set, a watchdog stops this instance (kube-down.sh) once that
#                               process has exited, however it exits
#   KEYMOUNT_TESTBED_REMOVE_DIR if 1 (with OWNER_PID), the watchdog also removes DIR afterwards
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
say() { echo "kube-up: $*" >&2; }
die() { echo "kube-up: ERROR: $*" >&2; exit 1; }

[[ $# == 1 ]] || die "usage: kube-up.sh DIR"
mkdir -p "$1"
DIR=$(cd "$1" && pwd)
BIN=${KEYMOUNT_TESTBED_CACHE:-/var/cache/keymount-testbed}/v1.20.2/bin

for b in kube-apiserver kube-controller-manager; do
    [[ -x $BIN/$b ]] || die "$BIN/$b missing: run scripts/testbed/build-kube.sh first"
done
for c in etcd openssl curl python3; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' not found: apt-get install -y etcd-server openssl curl python3"
done

# A process of this instance: alive, not a zombie, and started with DIR in its arguments.
ours() {
    local pid=$1
    [[ -n $pid && -d /proc/$pid ]] || return 1
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DIR/"
}

readyz() {
    curl -sf --max-time 3 --cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key" \
        "https://127.0.0.1:$1/readyz" >/dev/null 2>&1
}

# --- already running? ----------------------------------------------------------------------
if [[ -f $DIR/env ]]; then
    running=1
    for p in etcd kube-apiserver kube-controller-manager; do
        ours "$(cat "$DIR/$p.pid" 2>/dev/null || true)" || running=0
    done
    api_port=$(sed -n 's/^export KEYMOUNT_TESTBED_API_PORT=//p' "$DIR/env")
    if [[ $running == 1 ]] && readyz "$api_port"; then
        say "already running in $DIR"
        echo "$DIR/kubeconfig"
        exit 0
    fi
    say "stale instance in $DIR; stopping what is left and starting afresh"
    "$HERE/kube-down.sh" "$DIR" >&2 || true
    rm -rf "$DIR/etcd-data" "$DIR/env" "$DIR/kubeconfig"
fi

# --- certificates --------------------------------------------------------------------------
PKI=$DIR/pki
if [[ ! -f $PKI/.complete || ! -f $PKI/apiserver-kubelet-client.crt ]]; then
    say "generating CA, serving, client and service-account keys in $PKI"
    rm -rf "$PKI" && mkdir -p "$PKI" && chmod 700 "$PKI"
    (
        cd "$PKI"
        ossl() { openssl "$@" 2>/dev/null; }
        ossl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 \
            -subj "/CN=keymount-testbed-ca" -addext "basicConstraints=critical,CA:TRUE" \
            -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature"
        leaf() { # name subject extensions
            ossl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2"
            printf '%s\n' "$3" >"$1.ext"
            ossl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
                -extfile "$1.ext" -out "$1.crt"
            rm -f "$1.csr" "$1.ext"
        }
        leaf apiserver "/CN=kube-apiserver" \
            "$(printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
                'extendedKeyUsage=serverAuth' \
                'subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,IP:10.0.0.1')"
        client_ext=$(printf '%s\n' 'basicConstraints=CA:FALSE' 'keyUsage=critical,digitalSignature,keyEncipherment' \
            'extendedKeyUsage=clientAuth')
        leaf admin "/O=system:masters/CN=keymount-testbed-admin" "$client_ext"
        leaf controller-manager "/O=system:masters/CN=system:kube-controller-manager" "$client_ext"
        # kube-apiserver's client certificate towards kubelets (exec, logs, port-forward).
        leaf apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client_ext"
        ossl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out sa.key
        ossl pkey -in sa.key -pubout -out sa.pub
        chmod 600 ./*.key
    ) || die "openssl failed generating certificates in $PKI"
    touch "$PKI/.complete"
fi

# --- ports and start (serialised across instances so two never pick the same port) --------
LOCK=/tmp/keymount-testbed-ports.lock
exec 8>"$LOCK"
flock 8

read -r ETCD_PORT ETCD_PEER_PORT API_PORT <<<"$(python3 - <<'EOF'
import socket
socks = []
for _ in range(3):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
)"

start() { # name args...
    local name=$1
    shift
    setsid "$@" </dev/null >"$DIR/$name.log" 2>&1 8>&- &
    echo $! >"$DIR/$name.pid"
}

wait_for() { # what seconds command...
    local what=$1 secs=$2 i
    shift 2
    for ((i = 0; i < secs * 5; i++)); do
        "$@" && return 0
        sleep 0.2
    done
    return 1
}

fail_start() { # name
    say "$1 did not come up; last lines of $DIR/$1.log:"
    tail -20 "$DIR/$1.log" >&2 || true
    "$HERE/kube-down.sh" "$DIR" >&2 || true
    die "$1 failed to start (log: $DIR/$1.log)"
}

say "starting etcd on 127.0.0.1:$ETCD_PORT"
mkdir -p "$DIR/etcd-data" && chmod 700 "$DIR/etcd-data"
start etcd etcd --name=testbed --data-dir="$DIR/etcd-data" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="testbed=http://127.0.0.1:$ETCD_PEER_PORT" \
    --log-level=warn
wait_for etcd 30 curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/health" -o /dev/null || fail_start etcd

say "starting kube-apiserver on https://127.0.0.1:$API_PORT"
start kube-apiserver "$BIN/kube-apiserver" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" --insecure-port=0 \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --api-audiences=https://kubernetes.default.svc \
    --authorization-mode=Node,RBAC \
    --feature-gates=CSIServiceAccountToken=true \
    --disable-admission-plugins=ServiceAccount,TaintNodesByCondition \
    --enable-admission-plugins=NamespaceLifecycle,LimitRanger,DefaultStorageClass,ResourceQuota,DefaultTolerationSeconds,MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
    --service-cluster-ip-range=10.0.0.0/24 \
    --endpoint-reconciler-type=none \
    --allow-privileged=true --profiling=false \
    --kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=Hostname \
    --v=1
# Ports are bound once /healthz answers at all (even 'not ready'); release the lock then.
wait_for kube-apiserver 60 curl -s --max-time 2 -o /dev/null -k "https://127.0.0.1:$API_PORT/healthz" \
    || fail_start kube-apiserver
flock -u 8

wait_for kube-apiserver 90 readyz "$API_PORT" || fail_start kube-apiserver

# --- kubeconfigs ---------------------------------------------------------------------------
# shellcheck source=scripts/testbed/kubeconfig.sh
. "$HERE/kubeconfig.sh"
kubeconfig() { # file user cert key
    write_kubeconfig "$1" "https://127.0.0.1:$API_PORT" "$PKI/ca.crt" "$2" "$3" "$4"
}
kubeconfig "$DIR/controller-manager.kubeconfig" controller-manager "$PKI/controller-manager.crt" "$PKI/controller-manager.key"

say "starting kube-controller-manager"
start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$DIR/controller-manager.kubeconfig" \
    --controllers='*,-cloud-node-lifecycle,-route,-service,-nodeipam,-nodelifecycle,-attachdetach,-persistentvolume-expander' \
    --use-service-account-credentials=false \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --leader-elect=false --port=0 --secure-port=0 \
    --v=1
sleep 0.5
ours "$(cat "$DIR/kube-controller-manager.pid")" || fail_start kube-controller-manager

kubeconfig "$DIR/kubeconfig" admin "$PKI/admin.crt" "$PKI/admin.key"
cat >"$DIR/env.tmp" <<EOF
export KUBECONFIG=$DIR/kubeconfig
export KEYMOUNT_TESTBED_DIR=$DIR
export KEYMOUNT_TESTBED_API_URL=https://127.0.0.1:$API_PORT
export KEYMOUNT_TESTBED_API_PORT=$API_PORT
export KEYMOUNT_TESTBED_ETCD_PORT=$ETCD_PORT
export KEYMOUNT_TESTBED_CA=$PKI/ca.crt
EOF
mv -f "$DIR/env.tmp" "$DIR/env"

if [[ -n ${KEYMOUNT_TESTBED_OWNER_PID:-} ]]; then
    owner=$KEYMOUNT_TESTBED_OWNER_PID
    remove=${KEYMOUNT_TESTBED_REMOVE_DIR:-0}
    setsid bash -c '
        owner=$1 dir=$2 down=$3 remove=$4
        while [ -d /proc/$owner ] && [ "$(awk "{print \$3}" /proc/$owner/stat 2>/dev/null)" != Z ]; do sleep 1; done
        "$down" "$dir" >/dev/null 2>&1
        if [ "$remove" = 1 ]; then rm -rf "$dir"; fi
    ' keymount-testbed-watchdog "$owner" "$DIR" "$HERE/kube-down.sh" "$remove" </dev/null >/dev/null 2>&1 &
    echo $! >"$DIR/watchdog.pid"
    say "watchdog $(cat "$DIR/watchdog.pid") stops this instance when process $owner exits"
fi

say "ready: https://127.0.0.1:$API_PORT (source $DIR/env)"
echo "$DIR/kubeconfig"
