#!/usr/bin/env bash
# Builds kube-apiserver, kube-controller-manager, kube-scheduler and kubelet v1.20.2 from Debian
# bookworm's own source package and caches them at /var/cache/keymount-testbed/v1.20.2/bin/.
#
# A later run finds the cache (and its marker, which names the binaries it holds) and returns in
# well under a second. A cache made before a binary was added to the set (its marker does not
# name it) is extended: only the missing binaries are built.
# /etc/apt is never touched: the deb-src line lives in a private apt config.
#
# Environment:
#   KEYMOUNT_TESTBED_CACHE  cache root (default /var/cache/keymount-testbed)
#   KEYMOUNT_TESTBED_WORK   build work dir (default: a temp dir, removed after success)
set -euo pipefail

KUBE_VERSION=v1.20.2
DEB_VERSION=1.20.5+really1.20.2-1.1+deb12u1
CACHE_ROOT=${KEYMOUNT_TESTBED_CACHE:-/var/cache/keymount-testbed}
CACHE=$CACHE_ROOT/$KUBE_VERSION
BIN=$CACHE/bin
MARKER=$CACHE/.complete
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet)
# The cache key: the marker's "binaries=" field must name exactly this set.
KEY="binaries=${BINARIES[*]}"
KEY=${KEY// /,}

say() { echo "build-kube: $*" >&2; }
die() { echo "build-kube: ERROR: $*" >&2; exit 1; }

# Which binaries this run has to build: all of them, or (an older cache) the missing ones.
cached() {
    [[ -f $MARKER ]] && grep -qF -- "$KEY" "$MARKER" || return 1
    local b
    for b in "${BINARIES[@]}"; do [[ -x $BIN/$b ]] || return 1; done
}
if cached; then
    say "cached: $BIN ($(cat "$MARKER"))"
    exit 0
fi
if [[ -f $MARKER ]]; then
    say "cache in $CACHE predates the set ${BINARIES[*]}; building what is missing"
fi

# --- prerequisites -----------------------------------------------------------------------
need_pkgs=()
command -v go >/dev/null 2>&1 || need_pkgs+=(golang-go)
command -v etcd >/dev/null 2>&1 || need_pkgs+=(etcd-server)
command -v make >/dev/null 2>&1 || need_pkgs+=(make)
command -v rsync >/dev/null 2>&1 || need_pkgs+=(rsync)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script needs Debian bookworm"
if ((${#need_pkgs[@]})); then
    [[ $(id -u) == 0 ]] || die "missing ${need_pkgs[*]}; run as root or: sudo apt-get install -y ${need_pkgs[*]}"
    say "installing ${need_pkgs[*]} (apt-get update first)"
    apt-get update -qq >/dev/null || die "apt-get update failed; cannot install ${need_pkgs[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null \
        || die "could not install ${need_pkgs[*]} (apt-get install -y ${need_pkgs[*]})"
fi
for c in go etcd make rsync openssl; do
    command -v "$c" >/dev/null 2>&1 || die "'$c' still missing after install; install it with apt-get"
done
say "using $(go version)"

mkdir -p "$CACHE" || die "cannot create $CACHE (run as root or set KEYMOUNT_TESTBED_CACHE)"

# --- one build at a time --------------------------------------------------------------------
exec 9>"$CACHE/.lock"
if ! flock -n 9; then
    say "another build holds $CACHE/.lock; waiting for it"
    flock 9
    if cached; then say "cached by the other build: $BIN"; exit 0; fi
fi
# Under the lock: an old marker stays valid for the binaries it built; keep those.
MISSING=()
for b in "${BINARIES[@]}"; do
    if [[ -f $MARKER && -x $BIN/$b ]]; then continue; fi
    MISSING+=("$b")
done

# --- source --------------------------------------------------------------------------------
WORK=${KEYMOUNT_TESTBED_WORK:-}
cleanup_work=0
if [[ -z $WORK ]]; then
    WORK=$(mktemp -d /var/tmp/keymount-kube-build.XXXXXX)
    cleanup_work=1
fi
mkdir -p "$WORK"
say "work dir $WORK"

APT=$WORK/apt
mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial" "$WORK/src"
echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main" \
    >"$APT/sources.list"
APT_OPTS=(
    -o "Dir::Etc::sourcelist=$APT/sources.list"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$APT/lists"
    -o "Dir::Cache=$APT/cache"
)
orig=$(ls "$WORK"/src/kubernetes_*.orig.tar.gz 2>/dev/null | head -1 || true)
if [[ -z $orig ]]; then
    say "fetching source package kubernetes=$DEB_VERSION (private apt config)"
    apt-get "${APT_OPTS[@]}" update -qq >/dev/null 2>"$WORK/apt-update.err" \
        || die "apt-get update for deb-src bookworm failed: $(tail -1 "$WORK/apt-update.err")"
    (cd "$WORK/src" && apt-get "${APT_OPTS[@]}" source --download-only "kubernetes=$DEB_VERSION" \
        >"$WORK/apt-source.log" 2>&1) \
        || die "apt-get source kubernetes=$DEB_VERSION failed: $(tail -1 "$WORK/apt-source.log")"
    orig=$(ls "$WORK"/src/kubernetes_*.orig.tar.gz | head -1)
fi

TREE=$WORK/tree/kubernetes-1.20.2
if [[ ! -d $TREE ]]; then
    say "unpacking $(basename "$orig")"
    rm -rf "$WORK/tree" && mkdir -p "$WORK/tree"
    tar -xzf "$orig" -C "$WORK/tree"
fi
[[ -d $TREE/vendor ]] || die "unexpected source layout: no $TREE/vendor"

# --- the one fix: reflect2 v1.0.1's mapiterinit linkname (as reflect2 v1.0.2 did) --------
R2=$TREE/vendor/github.com/modern-go/reflect2
if [[ ! -f $R2/go_above_118.go ]]; then
    say "patching vendored modern-go/reflect2 for Go >= 1.18 map iteration"
    perl -0pi -e '
        s{// m escapes into the return value, but the caller of mapiterinit\n// doesn.t let the return value escape.\n//go:noescape\n//go:linkname mapiterinit reflect.mapiterinit\nfunc mapiterinit\(rtype unsafe.Pointer, m unsafe.Pointer\) \*hiter\n\n}{}s or die "mapiterinit declaration not found\n";
        s{type hiter struct \{.*?\n\}\n}{type hiter struct {
	key         unsafe.Pointer
	value       unsafe.Pointer
	t           unsafe.Pointer
	h           unsafe.Pointer
	buckets     unsafe.Pointer
	bptr        unsafe.Pointer
	overflow    *[]unsafe.Pointer
	oldoverflow *[]unsafe.Pointer
	startBucket uintptr
	offset      uint8
	wrapped     bool
	B           uint8
	i           uint8
	bucket      uintptr
	checkBucket uintptr
}
}s or die "hiter struct not found\n";
    ' "$R2/unsafe_link.go"
    perl -0pi -e '
        s{func \(type2 \*UnsafeMapType\) UnsafeIterate\(obj unsafe.Pointer\) MapIterator \{\n.*?\n\}\n\n}{}s
            or die "UnsafeIterate not found\n";
    ' "$R2/unsafe_map.go"
    cat >"$R2/go_below_118.go" <<'EOF'
//+build !go1.18

package reflect2

import (
	"unsafe"
)

// m escapes into the return value, but the caller of mapiterinit
// doesn't let the return value escape.
//go:noescape
//go:linkname mapiterinit reflect.mapiterinit
func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer) (val *hiter)

func (type2 *UnsafeMapType) UnsafeIterate(obj unsafe.Pointer) MapIterator {
	return &UnsafeMapIterator{
		hiter:      mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj)),
		pKeyRType:  type2.pKeyRType,
		pElemRType: type2.pElemRType,
	}
}
EOF
    cat >"$R2/go_above_118.go" <<'EOF'
//+build go1.18

package reflect2

import (
	"unsafe"
)

// m escapes into the return value, but the caller of mapiterinit
// doesn't let the return value escape.
//go:noescape
//go:linkname mapiterinit reflect.mapiterinit
func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer, it *hiter)

func (type2 *UnsafeMapType) UnsafeIterate(obj unsafe.Pointer) MapIterator {
	var it hiter
	mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj), &it)
	return &UnsafeMapIterator{
		hiter:      &it,
		pKeyRType:  type2.pKeyRType,
		pElemRType: type2.pElemRType,
	}
}
EOF
fi

# --- build ---------------------------------------------------------------------------------
say "building ${MISSING[*]} (several minutes on 2 cores; log: $WORK/make.log)"
start=$(date +%s)
(
    cd "$TREE"
    export GOPROXY=off GOFLAGS= GO111MODULE= CGO_ENABLED=0 HOME=$WORK/home GOCACHE=$WORK/gocache
    mkdir -p "$HOME"
    what=""
    for b in "${MISSING[@]}"; do what+=" cmd/$b"; done
    make WHAT="${what# }"
) >"$WORK/make.log" 2>&1 &
make_pid=$!
while kill -0 "$make_pid" 2>/dev/null; do
    sleep 20
    kill -0 "$make_pid" 2>/dev/null || break
    say "  still building ($(($(date +%s) - start))s): $(tail -1 "$WORK/make.log" | cut -c1-100)"
done
if ! wait "$make_pid"; then
    tail -30 "$WORK/make.log" >&2
    die "make failed after $(($(date +%s) - start))s; full log: $WORK/make.log"
fi
say "built in $(($(date +%s) - start))s"

mkdir -p "$BIN"
for b in "${MISSING[@]}"; do
    src=$TREE/_output/bin/$b
    [[ -x $src ]] || src=$(ls "$TREE"/_output/local/bin/*/*/"$b" 2>/dev/null | head -1)
    [[ -n $src && -x $src ]] || die "build finished but $b not found under $TREE/_output"
    install -m 0755 "$src" "$BIN/$b.tmp" && mv -f "$BIN/$b.tmp" "$BIN/$b"
done
for b in "${MISSING[@]}"; do
    "$BIN/$b" --version >&2 || die "built $b does not run"
done
echo "$KUBE_VERSION from kubernetes=$DEB_VERSION, $(go version | awk '{print $3}'), $(date -u +%FT%TZ), $KEY" >"$MARKER"
say "cached at $BIN"
if [[ $cleanup_work == 1 ]]; then rm -rf "$WORK"; fi
