# Versions of the real components the local environment builds from Go modules.
# Sourced by build.sh and up.sh; bump here only.
K8S_VERSION=v1.34.4
ETCD_VERSION=v3.6.16
HELM_VERSION=v3.22.0
MINIO_VERSION=v0.0.0-20260212201848-7aac2a2c5b7c
S3FLOW_CACHE=${S3FLOW_CACHE:-$HOME/.cache/s3flow}
S3FLOW_BIN_DIR=$S3FLOW_CACHE/bin
