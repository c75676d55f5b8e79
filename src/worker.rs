//! The contract between the scan controller and `s3flow worker` in a chunk Job: the environment
//! the Job sets, the labels it carries, the exit codes the Job's failure policy reads and the
//! failure message the worker leaves. One definition for both sides.

use serde::{Deserialize, Serialize};

/// The chunk task, as JSON ([`crate::scan::ChunkTask`]).
pub const ENV_TASK: &str = "S3FLOW_CHUNK_TASK";
/// Where the worker also stores its full report, `s3://bucket/key`.
pub const ENV_REPORT_TO: &str = "S3FLOW_REPORT_TO";
/// Where the worker writes its one-line result (the pod's termination message).
pub const ENV_TERMINATION_MESSAGE_PATH: &str = "S3FLOW_TERMINATION_MESSAGE_PATH";
/// S3 endpoint, region and path-style addressing of the scanned object's store.
pub const ENV_S3_ENDPOINT: &str = "S3FLOW_S3_ENDPOINT";
/// Signing region of the scanned object's store.
pub const ENV_S3_REGION: &str = "S3FLOW_S3_REGION";
/// `true` when the scanned object's store addresses buckets path-style (`endpoint/bucket`).
pub const ENV_S3_FORCE_PATH_STYLE: &str = "S3FLOW_S3_FORCE_PATH_STYLE";
/// The operator's address policy ([`crate::address::AddressPolicy::to_env`]).
pub const ENV_ADDRESS_POLICY: &str = "S3FLOW_ADDRESS_POLICY";
/// Static credentials, from the scan's credentials Secret.
pub const CREDENTIAL_KEYS: [(&str, bool); 3] = [
    ("AWS_ACCESS_KEY_ID", false),
    ("AWS_SECRET_ACCESS_KEY", false),
    ("AWS_SESSION_TOKEN", true),
];

/// Where a worker acting as a ServiceAccount reads its projected token ([`WorkerIdentity`]).
pub const ENV_WEB_IDENTITY_TOKEN_FILE: &str = "S3FLOW_WEB_IDENTITY_TOKEN_FILE";
/// The role the worker assumes with it (unset where the store maps claims to a policy itself).
pub const ENV_ROLE_ARN: &str = "S3FLOW_ROLE_ARN";
/// The STS session name.
pub const ENV_ROLE_SESSION_NAME: &str = "S3FLOW_ROLE_SESSION_NAME";
/// The STS endpoint the cluster admin named for the store (unset: AWS's regional STS).
pub const ENV_STS_ENDPOINT: &str = "S3FLOW_STS_ENDPOINT";
/// The region of the STS call.
pub const ENV_STS_REGION: &str = "S3FLOW_STS_REGION";
/// How long the worker's temporary keys last, in seconds.
pub const ENV_STS_DURATION_SECONDS: &str = "S3FLOW_STS_DURATION_SECONDS";
/// The pod volume holding the projected token.
pub const IDENTITY_VOLUME: &str = "s3flow-identity";
/// Where that volume is mounted.
pub const IDENTITY_DIR: &str = "/var/run/secrets/s3flow.io/identity";
/// The token's file name in it.
pub const IDENTITY_TOKEN: &str = "token";
/// How long the kubelet's projected token lasts (it renews it at 80%).
pub const IDENTITY_TOKEN_SECONDS: i64 = 3600;

/// The ServiceAccount a scan's pods run as and how its workers turn its projected token into
/// keys: the same exchange as the operator's, so it works with or without EKS's webhook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerIdentity {
    /// The ServiceAccount of the pods.
    pub service_account: String,
    /// The projected token's audience (the STS's).
    pub audience: String,
    /// The role to assume, if the store needs one.
    pub role_arn: Option<String>,
    /// The admin's STS endpoint for the store; `None`: AWS's regional STS.
    pub sts_endpoint: Option<String>,
    /// The region of the STS call.
    pub region: String,
    /// The STS session name.
    pub session_name: String,
    /// How long the temporary keys last.
    pub duration_seconds: u64,
}

/// What a container processor gets about its chunk.
pub const ENV_CHUNK_FILE: &str = "S3FLOW_CHUNK_FILE";
/// The chunk's index, from 0.
pub const ENV_CHUNK_INDEX: &str = "S3FLOW_CHUNK_INDEX";
/// The chunk's byte range in the object, `start-end` with `end` exclusive.
pub const ENV_CHUNK_RANGE: &str = "S3FLOW_CHUNK_RANGE";
/// A Parquet chunk's row groups in the object, such as `4-7` (the file's row groups 0-3).
pub const ENV_CHUNK_ROW_GROUPS: &str = "S3FLOW_CHUNK_ROW_GROUPS";
/// Bucket of the scanned object.
pub const ENV_BUCKET: &str = "S3FLOW_BUCKET";
/// Key of the scanned object.
pub const ENV_KEY: &str = "S3FLOW_KEY";
/// What the onComplete container gets: the manifest's `s3://` URL.
pub const ENV_MANIFEST: &str = "S3FLOW_MANIFEST";

/// Label of every Job of a scan: the scan's uid (a selector; ownership is the owner reference).
pub const LABEL_SCAN: &str = "s3flow.io/scan-uid";
/// Label of a chunk Job: its chunk index.
pub const LABEL_CHUNK: &str = "s3flow.io/chunk";
/// Label of a Job: its [`Role`](crate::controller::scan) (`scan`, `process`, `on-complete`).
pub const LABEL_ROLE: &str = "s3flow.io/role";
/// Label of a chunk Job re-run from its true start state: the state's code.
pub const LABEL_START_STATE: &str = "s3flow.io/start-state";

/// Container names in chunk Jobs.
pub const CONTAINER_WORKER: &str = "worker";
/// The worker that fetches a chunk into the volume it shares with the processor.
pub const CONTAINER_FETCH: &str = "fetch";
/// The user's container: a chunk processor, or the onComplete container.
pub const CONTAINER_PROCESSOR: &str = "processor";

/// Exit code of a worker whose failure retrying cannot fix (bad data, access denied, an invalid
/// task): the Job's pod failure policy fails the chunk at once. Other failures exit with 1.
pub const PERMANENT_FAILURE_EXIT_CODE: i32 = 3;

/// The termination message of a worker that failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureMessage {
    /// The condition reason of the failure (`BadData`, `AccessDenied`, ...).
    pub reason: String,
    /// The error's message, URLs redacted and cut to 1 KiB ([`crate::redact::message`]).
    pub error: String,
}
