#!/usr/bin/env bash
# node-restart-kubelet.sh DIR: stops the kubelet of the node node-up.sh started in DIR/node (by
# its PID file, TERM as node-down.sh does) and starts it again with the same command line
# (DIR/node/kubelet.sh), appending to its log; waits for its healthz. Pods, containers, mounts
# and the plugin registration sockets stay as they are, as on a node whose kubelet restarts.
set -euo pipefail

say() { echo "node-restart-kubelet: $*" >&2; }
die() { say "$*"; exit 1; }
[[ $# == 1 ]] || { say "usage: node-restart-kubelet.sh DIR"; exit 2; }
NODE=$(cd "$1" && pwd)/node
[[ -x $NODE/kubelet.sh && -f $NODE/env ]] || die "no node started by node-up.sh in $1"
# shellcheck disable=SC1091
. "$NODE/env"

pid=$(cat "$NODE/kubelet.pid" 2>/dev/null || true)
if [[ -n $pid ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$NODE/"; then
    kill -TERM "$pid"
    for ((i = 0; i < 100; i++)); do [[ -d /proc/$pid ]] || break; sleep 0.1; done
    [[ -d /proc/$pid ]] && { say "kubelet ($pid) ignored TERM for 10 s; killing"; kill -KILL "$pid"; sleep 0.5; }
fi
echo "--- restarted by node-restart-kubelet.sh at $(date +%T) ---" >>"$NODE/kubelet.log"
setsid "$NODE/kubelet.sh" </dev/null >>"$NODE/kubelet.log" 2>&1 &
echo $! >"$NODE/kubelet.pid"
for ((i = 0; i < 300; i++)); do
    if curl -sf --max-time 2 "http://127.0.0.1:$KEYMOUNT_NODE_KUBELET_HEALTHZ_PORT/healthz" -o /dev/null; then
        say "kubelet restarted ($(cat "$NODE/kubelet.pid"))"
        exit 0
    fi
    sleep 0.2
done
tail -20 "$NODE/kubelet.log" >&2
die "kubelet did not come back within 60 s (log: $NODE/kubelet.log)"
