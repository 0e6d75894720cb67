#!/usr/bin/env bash
# node-down.sh DIR: stops the node node-up.sh started in DIR/node (kube-scheduler, kubelet,
# the pods' containers, containerd), each by its PID file, unmounts what they left under
# DIR/node, deletes the Node object, removes the host paths they created and restores the
# sysctls kubelet changed (as recorded by node-up.sh). Leaves the logs in DIR/node.
set -euo pipefail

say() { echo "node-down: $*" >&2; }
[[ $# == 1 ]] || { say "usage: node-down.sh DIR"; exit 2; }
[[ -d $1/node ]] || { say "no node in $1; nothing to stop"; exit 0; }
DIR=$(cd "$1" && pwd)
NODE=$DIR/node
CD=$NODE/containerd

ours() { # pid: alive, not a zombie, started with NODE in its arguments
    local pid=$1
    [[ -n $pid && -d /proc/$pid ]] || return 1
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$NODE/"
}
stop() { # name
    local pidfile=$NODE/$1.pid pid i
    [[ -f $pidfile ]] || return 0
    pid=$(cat "$pidfile")
    if ours "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do ours "$pid" || break; sleep 0.1; done
        if ours "$pid"; then
            say "$1 ($pid) ignored TERM for 10 s; killing"
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do ours "$pid" || break; sleep 0.1; done
        fi
    fi
    rm -f "$pidfile"
}

stop kube-scheduler
stop kubelet

# The pods' containers: their shims run runc with the node's runc root; kill each container
# (by the PID runc reports) and the shims (by their -address argument naming the node), then
# containerd.
if [[ -d $CD/runc ]] && command -v runc >/dev/null 2>&1; then
    for ns in "$CD"/runc/*/; do
        [[ -d $ns ]] || continue
        for id in $(runc --root "$ns" list -q 2>/dev/null); do
            runc --root "$ns" kill "$id" KILL >/dev/null 2>&1 || true
            runc --root "$ns" delete --force "$id" >/dev/null 2>&1 || true
        done
    done
fi
for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CD/containerd.sock" 2>/dev/null || true); do
    kill -KILL "$pid" 2>/dev/null || true
done
stop containerd

# Whatever is still mounted below the node (pod volumes, snapshots, sandbox shm), deepest first.
while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
done < <(findmnt -rn -o TARGET | awk -v p="$NODE/" 'index($0, p) == 1' | sort -r)

# The Node object (a later DaemonSet must not see a dead node).
if [[ -f $DIR/env ]]; then
    # shellcheck disable=SC1091
    . "$DIR/env"
    curl -s --max-time 5 --cacert "$DIR/pki/ca.crt" --cert "$DIR/pki/admin.crt" --key "$DIR/pki/admin.key" \
        -X DELETE "$KEYMOUNT_TESTBED_API_URL/api/v1/nodes/localhost" -o /dev/null || true
fi

# Host paths: remove those that did not exist before the node, and what is new below those
# that did; then restore the sysctls.
if [[ -f $NODE/host-paths ]]; then
    mapfile -t before <"$NODE/host-paths"
    declare -A had=()
    for line in "${before[@]}"; do had[${line#* }]=1; done
    for line in "${before[@]}"; do
        kind=${line%% *} path=${line#* }
        case $kind in
            absent) [[ -e $path ]] && rm -rf --one-file-system "$path" ;;
            existed)
                if [[ -d $path ]]; then
                    find "$path" -mindepth 1 -maxdepth 1 2>/dev/null | while read -r e; do
                        [[ -n ${had[$e]:-} ]] || rm -rf --one-file-system "$e"
                    done
                fi
                ;;
        esac
    done
    # The watchdog and kube-down.sh may both get here; the first one's rename wins.
    mv -f "$NODE/host-paths" "$NODE/host-paths.restored" 2>/dev/null || true
fi
if [[ -f $NODE/host-sysctls ]]; then
    while IFS= read -r kv; do
        [[ -n $kv ]] && sysctl -q -w "$kv" >/dev/null 2>&1 || say "could not restore sysctl $kv"
    done <"$NODE/host-sysctls"
    mv -f "$NODE/host-sysctls" "$NODE/host-sysctls.restored" 2>/dev/null || true
fi
# Large and useless after the run: images and snapshots.
rm -rf --one-file-system "$CD/root" "$CD/state" 2>/dev/null || true
if [[ -f /tmp/keymount-testbed-node.lock.owner && $(cat /tmp/keymount-testbed-node.lock.owner) == "$NODE" ]]; then
    rm -f /tmp/keymount-testbed-node.lock.owner
fi
say "stopped the node in $NODE"
