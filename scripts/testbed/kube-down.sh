#!/usr/bin/env bash
# kube-down.sh DIR: stops the instance kube-up.sh started in DIR, each process by its PID file
# (TERM, then KILL after 10 s), and waits until each has exited. Leaves DIR's files in place.
set -euo pipefail

say() { echo "kube-down: $*" >&2; }
[[ $# == 1 ]] || { say "usage: kube-down.sh DIR"; exit 2; }
[[ -d $1 ]] || { say "no such directory $1; nothing to stop"; exit 0; }
DIR=$(cd "$1" && pwd)

# Alive, not a zombie, and started with DIR in its arguments (never a recycled PID).
ours() {
    local pid=$1
    [[ -n $pid && -d /proc/$pid ]] || return 1
    [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$DIR/"
}

# A node next to this API server (node-up.sh) goes first: it needs the API server to delete
# its Node object, and its mounts must be gone before anyone removes DIR.
if [[ -d $DIR/node ]]; then
    "$(dirname "$0")/node-down.sh" "$DIR" || say "node-down.sh $DIR failed"
fi

stopped=0
for name in kube-controller-manager kube-apiserver etcd; do
    pidfile=$DIR/$name.pid
    [[ -f $pidfile ]] || continue
    pid=$(cat "$pidfile")
    if ours "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            ours "$pid" || break
            sleep 0.1
        done
        if ours "$pid"; then
            say "$name ($pid) ignored TERM for 10 s; killing"
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do ours "$pid" || break; sleep 0.1; done
        fi
        stopped=$((stopped + 1))
    fi
    rm -f "$pidfile"
done
say "stopped $stopped process(es) of $DIR"
