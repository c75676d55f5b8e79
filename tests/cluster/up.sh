#!/usr/bin/env bash
# Brings up the local environment on 127.0.0.1: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, MinIO and the node agent. Idempotent: builds what is missing (cached outside the
# repository), and leaves a healthy running environment as it is.
#
# Writes to $S3FLOW_ENV_DIR (default /tmp/s3flow-env):
#   env.sh       exports KUBECONFIG, the S3 endpoint and credentials, PATH with kubectl and helm,
#                S3FLOW_GITOPS_BIN (the GitOps test helper)
#   kubeconfig   admin (system:masters) client-certificate kubeconfig
#   logs/, pids/ one log and one pid file per component
# Stop everything with tests/cluster/down.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
. "$here/versions.sh"
. "$here/lib.sh"
. "$here/prereqs.sh"

if env_healthy; then
  log "environment already running in $S3FLOW_ENV_DIR"
  exit 0
fi
"$here/down.sh" >/dev/null 2>&1 || true

"$here/build.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$S3FLOW_CACHE/target}
log "building s3flow and the node agent"
(cd "$repo" && cargo build --quiet --workspace)

started=$(date +%s)
mkdir -p "$S3FLOW_ENV_DIR"/{logs,pids,pki,bin}
dir=$S3FLOW_ENV_DIR
pki=$dir/pki
for n in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  ln -sf "$S3FLOW_BIN_DIR/$n-$K8S_VERSION" "$dir/bin/$n"
done
ln -sf "$S3FLOW_BIN_DIR/etcd-$ETCD_VERSION" "$dir/bin/etcd"
ln -sf "$S3FLOW_BIN_DIR/helm-$HELM_VERSION" "$dir/bin/helm"
ln -sf "$S3FLOW_BIN_DIR/minio-$MINIO_VERSION" "$dir/bin/minio"
ln -sf "$(readlink -f "$S3FLOW_BIN_DIR/s3flow-gitops")" "$dir/bin/s3flow-gitops"
ln -sf "$CARGO_TARGET_DIR/debug/s3flow" "$dir/bin/s3flow"
ln -sf "$CARGO_TARGET_DIR/debug/s3flow-node-agent" "$dir/bin/s3flow-node-agent"

# PKI: one CA signs the serving certificate and every client certificate.
sign() { # name subject [extensions]
  local name=$1 subj=$2 ext=${3:-}
  openssl req -new -newkey rsa:2048 -nodes -keyout "$pki/$name.key" -subj "$subj" -out "$pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial -days 30 \
    ${ext:+-extfile <(printf '%s\n' "$ext")} -out "$pki/$name.crt" 2>/dev/null
}
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 30 -subj "/CN=s3flow-test-ca" 2>/dev/null
sign apiserver "/CN=kube-apiserver" "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc
extendedKeyUsage=serverAuth"
sign admin "/O=system:masters/CN=s3flow-admin" "extendedKeyUsage=clientAuth"
sign controller-manager "/CN=system:kube-controller-manager" "extendedKeyUsage=clientAuth"
sign scheduler "/CN=system:kube-scheduler" "extendedKeyUsage=clientAuth"
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null

server=https://127.0.0.1:$APISERVER_PORT
kubeconfig() { # file user
  cat >"$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: s3flow-test
  cluster: {server: "$server", certificate-authority: "$pki/ca.crt"}
users:
- name: $2
  user: {client-certificate: "$pki/$2.crt", client-key: "$pki/$2.key"}
contexts:
- name: s3flow-test
  context: {cluster: s3flow-test, user: $2, namespace: default}
current-context: s3flow-test
KC
}
kubeconfig "$dir/kubeconfig" admin
kubeconfig "$dir/controller-manager.kubeconfig" controller-manager
kubeconfig "$dir/scheduler.kubeconfig" scheduler

start etcd "$dir/bin/etcd" --name default --data-dir "$dir/etcd-data" --unsafe-no-fsync \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "default=http://127.0.0.1:$ETCD_PEER_PORT" --listen-metrics-urls "http://127.0.0.1:$ETCD_METRICS_PORT"
wait_for "etcd" 60 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

start kube-apiserver "$dir/bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$ETCD_PORT" --bind-address 127.0.0.1 --advertise-address 127.0.0.1 \
  --secure-port "$APISERVER_PORT" --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" --authorization-mode RBAC --anonymous-auth=true \
  --service-account-issuer "$server" --service-account-key-file "$pki/sa.pub" \
  --service-account-signing-key-file "$pki/sa.key" --api-audiences "$server" \
  --service-cluster-ip-range 10.0.0.0/24 --allow-privileged=true --endpoint-reconciler-type none \
  --cert-dir "$dir/apiserver-certs"
wait_for "kube-apiserver" 120 curl -sfk "$server/readyz"

start kube-controller-manager "$dir/bin/kube-controller-manager" \
  --kubeconfig "$dir/controller-manager.kubeconfig" \
  --authentication-kubeconfig "$dir/controller-manager.kubeconfig" \
  --authorization-kubeconfig "$dir/controller-manager.kubeconfig" \
  --use-service-account-credentials=true --leader-elect=false \
  --bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT" \
  --controllers "$CONTROLLERS" \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --cert-dir "$dir/controller-manager-certs" \
  `# The defaults (20 QPS, 5 Job syncs) cap a scan at about 5 chunk Jobs a second.` \
  --kube-api-qps 200 --kube-api-burst 400 --concurrent-job-syncs 20
start kube-scheduler "$dir/bin/kube-scheduler" \
  --kubeconfig "$dir/scheduler.kubeconfig" \
  --authentication-kubeconfig "$dir/scheduler.kubeconfig" \
  --authorization-kubeconfig "$dir/scheduler.kubeconfig" \
  --leader-elect=false --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" \
  --cert-dir "$dir/scheduler-certs"

# MinIO with every outbound feature off: nothing may dial beyond loopback.
MINIO_ROOT_USER=$S3_ACCESS_KEY MINIO_ROOT_PASSWORD=$S3_SECRET_KEY MINIO_UPDATE=off MINIO_BROWSER=off \
  MINIO_CALLHOME_ENABLE=off \
  start minio "$dir/bin/minio" server "$dir/minio-data" --quiet \
  --address "127.0.0.1:$MINIO_PORT" --console-address "127.0.0.1:$MINIO_CONSOLE_PORT"
wait_for "minio" 60 curl -sf "http://127.0.0.1:$MINIO_PORT/minio/health/live"

# The API server as an OpenID provider: its discovery document and keys readable without a token,
# as an STS fetches them.
"$dir/bin/kubectl" --kubeconfig "$dir/kubeconfig" create clusterrolebinding s3flow-test-oidc-discovery \
  --clusterrole=system:service-account-issuer-discovery --group=system:unauthenticated >/dev/null
# MinIO with OpenID STS: it trusts the API server's serving certificate through the test CA
# (certs-dir holds only CAs/, so MinIO itself still serves plain HTTP).
start_sts_minio() { # name port extra-env...
  local name=$1 port=$2; shift 2
  mkdir -p "$dir/$name-certs/CAs" "$dir/$name-data"
  cp "$pki/ca.crt" "$dir/$name-certs/CAs/ca.crt"
  env MINIO_ROOT_USER=$S3_ACCESS_KEY MINIO_ROOT_PASSWORD=$S3_SECRET_KEY MINIO_UPDATE=off MINIO_BROWSER=off \
    MINIO_CALLHOME_ENABLE=off MINIO_SITE_REGION=us-east-1 \
    MINIO_IDENTITY_OPENID_CONFIG_URL="$server/.well-known/openid-configuration" \
    MINIO_IDENTITY_OPENID_CLIENT_ID=$STS_AUDIENCE "$@" \
    setsid "$dir/bin/minio" server "$dir/$name-data" --quiet --certs-dir "$dir/$name-certs" \
    --address "127.0.0.1:$port" --console-address "127.0.0.1:$((port + 1))" \
    >"$dir/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/pids/$name.pid"
}
start_sts_minio minio-sts "$MINIO_STS_PORT" MINIO_IDENTITY_OPENID_ROLE_POLICY=s3flow-tenants
start_sts_minio minio-sts-claims "$MINIO_STS_CLAIMS_PORT" MINIO_IDENTITY_OPENID_CLAIM_NAME=sub
wait_for "minio-sts" 60 curl -sf "http://127.0.0.1:$MINIO_STS_PORT/minio/health/live"
wait_for "minio-sts-claims" 60 curl -sf "http://127.0.0.1:$MINIO_STS_CLAIMS_PORT/minio/health/live"
# MinIO names the role of a provider after its client id.
sts_role="arn:minio:iam:us-east-1::role/$(python3 -c "import base64,hashlib,sys
print(base64.urlsafe_b64encode(hashlib.sha1(sys.argv[1].encode()).digest()).rstrip(b'=').decode())" "$STS_AUDIENCE")"

start s3flow-node-agent "$dir/bin/s3flow-node-agent" --kubeconfig "$dir/kubeconfig" \
  --node-name "$NODE_NAME" --s3flow-binary "$dir/bin/s3flow" --state-dir "$dir/node" \
  --apiserver-port "$APISERVER_PORT"

cat >"$dir/env.sh" <<ENV
export KUBECONFIG=$dir/kubeconfig
export PATH=$dir/bin:\$PATH
export S3FLOW_ENV_DIR=$dir
export S3FLOW_TEST_S3_ENDPOINT=http://127.0.0.1:$MINIO_PORT
export S3FLOW_TEST_NODE=$NODE_NAME
export S3FLOW_GITOPS_BIN=$dir/bin/s3flow-gitops
export S3FLOW_TEST_STS_ENDPOINT=http://127.0.0.1:$MINIO_STS_PORT
export S3FLOW_TEST_STS_ROLE_ARN=$sts_role
export S3FLOW_TEST_STS_CLAIMS_ENDPOINT=http://127.0.0.1:$MINIO_STS_CLAIMS_PORT
export S3FLOW_TEST_STS_AUDIENCE=$STS_AUDIENCE
export S3FLOW_TEST_API_SERVER=$server
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export AWS_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
ENV
export KUBECONFIG=$dir/kubeconfig
wait_for "node $NODE_NAME Ready" 60 "$dir/bin/kubectl" wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
wait_for "default ServiceAccount" 60 "$dir/bin/kubectl" get serviceaccount default -n default
log "environment up in $(( $(date +%s) - started ))s: source $dir/env.sh"
