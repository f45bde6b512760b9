#!/usr/bin/env bash
# Builds the pinned Go binaries the rig needs into a cache outside the work tree, once.
# A warm second run only compares stamps and returns in well under a second.
#   usage: tools/build.sh [nsq|kube|kwok|helm|pause ...]   (default: all)
#   prints the bin directory on its last line.
# Environment: NSQ_OPERATOR_CACHE (default ~/.cache/nsq-operator).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/versions.env
source "$here/versions.env"
cache="${NSQ_OPERATOR_CACHE:-$HOME/.cache/nsq-operator}"
bin="$cache/bin"
stamps="$cache/stamps"
mkdir -p "$bin" "$stamps"
# One build at a time: parallel test runs and `make` targets share the cache.
exec 9>"$cache/.build.lock"
flock 9
export CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"

# stamp_ok NAME KEY: true when NAME was built from KEY and its binaries still exist.
stamp_ok() { [[ -f "$stamps/$1" && "$(cat "$stamps/$1")" == "$2" ]]; }
have_all() { local b; for b in "$@"; do [[ -x "$bin/$b" ]] || return 1; done; }
log() { printf '[tools] %s\n' "$*" >&2; }

build_nsq() {
  local key
  key="$NSQ_VERSION $(cat "$here/nsq/go.mod" "$here/nsq/go.sum" | sha256sum | cut -c1-16)"
  if stamp_ok nsq "$key" && have_all nsqd nsqlookupd to_nsq nsq_tail bench_reader bench_writer; then return; fi
  log "building NSQ $NSQ_VERSION (nsqd, nsqlookupd, to_nsq, nsq_tail, bench_reader, bench_writer)"
  (cd "$here/nsq" && go build -trimpath -ldflags "-s -w" -o "$bin/" \
    github.com/nsqio/nsq/apps/nsqd github.com/nsqio/nsq/apps/nsqlookupd \
    github.com/nsqio/nsq/apps/to_nsq github.com/nsqio/nsq/apps/nsq_tail \
    github.com/nsqio/nsq/bench/bench_reader github.com/nsqio/nsq/bench/bench_writer)
  echo "$key" >"$stamps/nsq"
}

build_kube() {
  local key minor ldflags v p
  key="$KUBERNETES_VERSION $(cat "$here/kube/go.mod" "$here/kube/go.sum" | sha256sum | cut -c1-16)"
  if stamp_ok kube "$key" && have_all etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; then return; fi
  log "building Kubernetes $KUBERNETES_VERSION (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy); 10-20 minutes cold"
  minor="${KUBERNETES_VERSION#v1.}"; minor="${minor%%.*}"
  # Without these stamps the binaries report v0.0.0 and clients such as helm refuse them.
  ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$KUBERNETES_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  (cd "$here/kube" && go build -trimpath -ldflags "$ldflags" -o "$bin/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
  (cd "$here/kube" && go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3)
  echo "$key" >"$stamps/kube"
}

# go_install NAME VERSION PACKAGE: a module without replace directives installs directly.
go_install() {
  local name="$1" version="$2" pkg="$3"
  if stamp_ok "$name" "$version" && have_all "$name"; then return; fi
  log "building $name $version"
  GOBIN="$bin" go install -trimpath -ldflags "-s -w $4" "$pkg@$version"
  echo "$version" >"$stamps/$name"
}

build_kwok() {
  go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok ""
  # kwok's binary ships no stages; its module does (kustomize/stage). Join the ones the rig uses:
  # nodes become Ready and keep heartbeating, pods become Running and go away when deleted.
  local src stages="$cache/kwok-stages.yaml"
  [[ -s "$stages" && "$(head -1 "$stages")" == "# kwok $KWOK_VERSION" ]] && return
  src="$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage"
  [[ -d "$src" ]] || (cd "$here/nsq" && go mod download -x "sigs.k8s.io/kwok@$KWOK_VERSION" >/dev/null 2>&1) || true
  { echo "# kwok $KWOK_VERSION"
    for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml pod/fast/pod-ready.yaml \
             pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
      echo "---"; cat "$src/$f"
    done; } >"$stages.tmp"
  mv "$stages.tmp" "$stages"
}
build_helm() {
  go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm \
    "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
}

build_pause() {
  # The pod sandbox image's one program (tools/pause): a static binary for a FROM-scratch image.
  local key
  key="$(cat "$here/pause/go.mod" "$here/pause/main.go" | sha256sum | cut -c1-16)"
  if stamp_ok pause "$key" && have_all pause; then return; fi
  log "building the sandbox image's pause program"
  (cd "$here/pause" && go build -trimpath -ldflags "-s -w" -o "$bin/pause" .)
  echo "$key" >"$stamps/pause"
}

groups=("$@")
[[ ${#groups[@]} -gt 0 ]] || groups=(nsq kwok helm kube pause)
for group in "${groups[@]}"; do
  case "$group" in
    nsq | kube | kwok | helm | pause) "build_$group" ;;
    *) echo "unknown tool group: $group (nsq, kube, kwok, helm, pause)" >&2; exit 2 ;;
  esac
done
echo "$bin"
