#!/usr/bin/env bash
# Builds, once, the real control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl), helm and MinIO from the Go module proxy, into a cache outside the repository, and the
# GitOps test helper from tests/gitops.
# Every binary lands in $S3FLOW_BIN_DIR/<name>-<version>; a binary already there is not rebuilt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.sh"

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
work=$S3FLOW_CACHE/gowork
mkdir -p "$S3FLOW_BIN_DIR" "$work"

log() { printf '[build %s] %s\n' "$(date +%T)" "$*" >&2; }
have() { [ -x "$S3FLOW_BIN_DIR/$1" ]; }

# A wrapper module: dependencies' replace directives do not apply, so modules that replace their
# siblings with ./paths upstream (kubernetes, etcd) resolve to published versions here.
wrapper() {
  local dir=$work/$1; shift
  rm -rf "$dir"; mkdir -p "$dir"
  (cd "$dir" && go mod init "local/$(basename "$dir")" >/dev/null 2>&1)
  echo "$dir"
}

build_kubernetes() {
  local names=(kube-apiserver kube-controller-manager kube-scheduler kubectl) missing=() n
  for n in "${names[@]}"; do have "$n-$K8S_VERSION" || missing+=("$n"); done
  [ ${#missing[@]} -gt 0 ] || return 0
  log "kubernetes $K8S_VERSION: ${missing[*]}"
  local dir minor staging gomod
  dir=$(wrapper "k8s-$K8S_VERSION")
  staging=v0.${K8S_VERSION#v1.}
  minor=$(echo "$K8S_VERSION" | cut -d. -f2)
  gomod=$(cd "$dir" && go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  # Every k8s.io/<staging> => ./staging/... line upstream becomes a replace with its published tag.
  local mods
  mods=$(sed -n 's#^\s*\(k8s\.io/[a-z0-9-]*\) => \./staging/.*#\1#p' "$gomod")
  [ -n "$mods" ] || { echo "no staging replaces found in $gomod" >&2; exit 1; }
  (
    cd "$dir"
    for m in $mods; do go mod edit -replace="$m=$m@$staging"; done
    grep '^godebug' "$gomod" >>go.mod || true
    local pkgs=() ldflags="" p
    for n in "${missing[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$n"); done
    for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
      ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
    done
    { echo '//go:build tools'; echo 'package tools'; for p in "${pkgs[@]}"; do echo "import _ \"$p\""; done; } >tools.go
    # Pin the release before tidy, or tidy would resolve k8s.io/kubernetes to its newest version.
    go get "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
    go mod tidy >/dev/null
    mkdir -p out
    go build -trimpath -ldflags "-s -w $ldflags" -o out/ "${pkgs[@]}"
    for n in "${missing[@]}"; do mv "out/$n" "$S3FLOW_BIN_DIR/$n-$K8S_VERSION"; done
  )
}

build_etcd() {
  have "etcd-$ETCD_VERSION" && return 0
  log "etcd $ETCD_VERSION"
  local dir
  dir=$(wrapper "etcd-$ETCD_VERSION")
  (
    cd "$dir"
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
    printf '//go:build tools\npackage tools\nimport _ "go.etcd.io/etcd/server/v3"\n' >tools.go
    go mod tidy >/dev/null
    go build -trimpath -ldflags "-s -w" -o "$S3FLOW_BIN_DIR/etcd-$ETCD_VERSION" go.etcd.io/etcd/server/v3
  )
}

build_helm() {
  have "helm-$HELM_VERSION" && return 0
  log "helm $HELM_VERSION"
  GOBIN=$work/helm-bin go install -trimpath \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$work/helm-bin/helm" "$S3FLOW_BIN_DIR/helm-$HELM_VERSION"
}

build_minio() {
  have "minio-$MINIO_VERSION" && return 0
  log "minio $MINIO_VERSION"
  GOBIN=$work/minio-bin go install -trimpath -ldflags "-s -w" "github.com/minio/minio@$MINIO_VERSION"
  mv "$work/minio-bin/minio" "$S3FLOW_BIN_DIR/minio-$MINIO_VERSION"
}

# The GitOps helper (tests/gitops, its versions pinned in its go.mod): keyed by a hash of its
# sources, so that an edit rebuilds it; $S3FLOW_BIN_DIR/s3flow-gitops points at the current one.
build_gitops() {
  local src=$here/../gitops name
  name=s3flow-gitops-$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)
  if ! have "$name"; then
    log "$name"
    (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$S3FLOW_BIN_DIR/$name" .)
  fi
  ln -sfn "$name" "$S3FLOW_BIN_DIR/s3flow-gitops"
}

start=$(date +%s)
build_etcd
build_minio
build_helm
build_kubernetes
build_gitops
log "all components present in $S3FLOW_BIN_DIR ($(( $(date +%s) - start ))s)"
