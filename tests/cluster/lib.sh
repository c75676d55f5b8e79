# Shared by up.sh and down.sh: where the environment lives and how its processes are tracked.
S3FLOW_ENV_DIR=${S3FLOW_ENV_DIR:-/tmp/s3flow-env}
ETCD_PORT=${S3FLOW_ETCD_PORT:-23790}
ETCD_PEER_PORT=$((ETCD_PORT + 10))
ETCD_METRICS_PORT=$((ETCD_PORT + 20))
APISERVER_PORT=${S3FLOW_APISERVER_PORT:-26443}
CONTROLLER_MANAGER_PORT=$((APISERVER_PORT + 1))
SCHEDULER_PORT=$((APISERVER_PORT + 2))
MINIO_PORT=${S3FLOW_MINIO_PORT:-29000}
MINIO_CONSOLE_PORT=$((MINIO_PORT + 1))
# Two more MinIO servers whose STS trusts the API server as its OpenID provider: one maps a role to
# a policy (role-policy mode), one maps each ServiceAccount to a policy of its name (claim mode).
MINIO_STS_PORT=$((MINIO_PORT + 2))
MINIO_STS_CLAIMS_PORT=$((MINIO_PORT + 4))
# The token audience both accept (their OpenID client id).
STS_AUDIENCE=sts.min.io
NODE_NAME=s3flow-node
S3_ACCESS_KEY=s3flowadmin
S3_SECRET_KEY=s3flowadmin-secret
# The controllers a Job, its pods and its garbage need; deployments for the operator's own chart.
CONTROLLERS=job-controller,garbage-collector-controller,ttl-after-finished-controller,serviceaccount-controller,serviceaccount-token-controller,root-ca-certificate-publisher-controller,namespace-controller,deployment-controller,replicaset-controller,endpointslice-controller

# Components in start order; down.sh stops them in reverse.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler minio minio-sts minio-sts-claims s3flow-node-agent)

log() { printf '[cluster %s] %s\n' "$(date +%T)" "$*" >&2; }

# start NAME COMMAND...: runs COMMAND in its own session, logging to logs/NAME.log.
start() {
  local name=$1; shift
  setsid "$@" >"$S3FLOW_ENV_DIR/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$S3FLOW_ENV_DIR/pids/$name.pid"
}

# wait_for WHAT SECONDS COMMAND...: polls COMMAND until it succeeds; shows the logs when it never does.
wait_for() {
  local what=$1 seconds=$2; shift 2
  local deadline=$(( $(date +%s) + seconds ))
  until "$@" >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      log "$what not ready after ${seconds}s"
      tail -n 30 "$S3FLOW_ENV_DIR"/logs/*.log >&2 || true
      exit 1
    fi
    sleep 0.5
  done
}

alive() { local f=$S3FLOW_ENV_DIR/pids/$1.pid; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

env_healthy() {
  local c
  for c in "${COMPONENTS[@]}"; do alive "$c" || return 1; done
  [ -f "$S3FLOW_ENV_DIR/env.sh" ] && curl -sfk "https://127.0.0.1:$APISERVER_PORT/readyz" >/dev/null
}
