//! `s3flow worker [fetch]`: one chunk of an S3ParallelScan, inside a chunk Job. Everything comes
//! from the environment the Job sets ([`s3flow::worker`]); the result leaves as the termination
//! message.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use clap::{Args, ValueEnum};
use s3flow::address::AddressPolicy;
use s3flow::s3::{S3Credentials, S3Settings, S3Url, client};
use s3flow::scan::{ChunkReport, ChunkTask, ScanError, Work, manifest, run_chunk};
use s3flow::shutdown::Stop;
use s3flow::worker::{
    ENV_ADDRESS_POLICY, ENV_REPORT_TO, ENV_ROLE_ARN, ENV_ROLE_SESSION_NAME, ENV_S3_ENDPOINT,
    ENV_S3_FORCE_PATH_STYLE, ENV_S3_REGION, ENV_STS_DURATION_SECONDS, ENV_STS_ENDPOINT,
    ENV_STS_REGION, ENV_TASK, ENV_WEB_IDENTITY_TOKEN_FILE, FailureMessage,
    PERMANENT_FAILURE_EXIT_CODE,
};

/// Longest termination message Kubernetes keeps.
const TERMINATION_MESSAGE_LIMIT: usize = 4096;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// Run the task (the default).
    Run,
    /// Write the chunk's records to a file for a user container (the task must say so).
    Fetch,
}

#[derive(Args)]
pub(crate) struct WorkerArgs {
    #[arg(value_enum, default_value = "run")]
    mode: Mode,
    /// The chunk task as JSON.
    #[arg(long, env = ENV_TASK, hide_env_values = true)]
    task: String,
    /// Where the full report is stored as well, s3://bucket/key.
    #[arg(long, env = ENV_REPORT_TO)]
    report_to: Option<String>,
    /// Endpoint of an S3-compatible store.
    #[arg(long, env = ENV_S3_ENDPOINT)]
    endpoint: Option<String>,
    /// Region to sign for.
    #[arg(long, env = ENV_S3_REGION)]
    region: Option<String>,
    /// Address buckets as endpoint/bucket.
    #[arg(long, env = ENV_S3_FORCE_PATH_STYLE)]
    force_path_style: bool,
    /// The addresses this worker may connect to, as the operator's policy says
    /// (`allow=CIDR,...;deny=CIDR,...;own=IP,...`). Unset: the default policy (no loopback,
    /// link-local or metadata addresses).
    #[arg(long, env = ENV_ADDRESS_POLICY)]
    address_policy: Option<String>,
    #[command(flatten)]
    identity: IdentityArgs,
}

/// A ServiceAccount's projected token exchanged at STS, when the scan acts as one.
#[derive(Args)]
struct IdentityArgs {
    /// The projected ServiceAccount token, re-read at every exchange.
    #[arg(long, env = ENV_WEB_IDENTITY_TOKEN_FILE)]
    web_identity_token_file: Option<std::path::PathBuf>,
    /// The role to assume with it.
    #[arg(long, env = ENV_ROLE_ARN)]
    role_arn: Option<String>,
    /// The STS session name.
    #[arg(long, env = ENV_ROLE_SESSION_NAME, default_value = "s3flow-worker")]
    role_session_name: String,
    /// The STS endpoint; unset: AWS's regional STS.
    #[arg(long, env = ENV_STS_ENDPOINT)]
    sts_endpoint: Option<String>,
    /// The region of the STS call.
    #[arg(long, env = ENV_STS_REGION, default_value = s3flow::s3::FALLBACK_REGION)]
    sts_region: String,
    /// How long the temporary keys last, in seconds.
    #[arg(long, env = ENV_STS_DURATION_SECONDS, default_value_t = 3600)]
    sts_duration_seconds: u64,
}

impl IdentityArgs {
    /// Renewing credentials from the token file, or the default chain without one.
    fn credentials(self, policy: &Arc<AddressPolicy>) -> S3Credentials {
        use s3flow::identity::{Refreshing, TokenFile, WebIdentity, WebIdentityFetch, sts_client};
        let Some(file) = self.web_identity_token_file else {
            return S3Credentials::DefaultChain;
        };
        let fetch = WebIdentityFetch {
            tokens: Arc::new(TokenFile(file)),
            identity: WebIdentity {
                sts: sts_client(
                    self.sts_endpoint.as_deref(),
                    &self.sts_region,
                    Some(policy.clone()),
                ),
                role_arn: self.role_arn,
                session_name: self.role_session_name,
                duration: Duration::from_secs(self.sts_duration_seconds),
                subject: "this pod's ServiceAccount".into(),
                audience: "its projected token's".into(),
            },
            observer: None,
        };
        // Renewed at 80% of the keys' life, as the operator renews its own.
        let renewing = Refreshing::new(fetch, Duration::from_secs(self.sts_duration_seconds));
        S3Credentials::Renewing(aws_sdk_s3::config::SharedCredentialsProvider::new(renewing))
    }
}

/// A worker's failure and the exit code that tells the Job whether retrying can help.
pub(crate) struct WorkerFailure {
    pub error: ScanError,
}

impl WorkerFailure {
    pub(crate) fn exit_code(&self) -> i32 {
        if self.error.is_transient() {
            1
        } else {
            PERMANENT_FAILURE_EXIT_CODE
        }
    }

    pub(crate) fn message(&self) -> String {
        let message = FailureMessage {
            reason: self.error.reason().into(),
            error: s3flow::redact::message(&self.error.to_string()),
        };
        serde_json::to_string(&message).unwrap_or_default()
    }
}

impl From<ScanError> for WorkerFailure {
    fn from(error: ScanError) -> Self {
        WorkerFailure { error }
    }
}

pub(crate) async fn run(args: WorkerArgs) -> Result<serde_json::Value, WorkerFailure> {
    let invalid = |message: String| WorkerFailure {
        error: ScanError::InvalidScan(message),
    };
    let task: ChunkTask = serde_json::from_str(&args.task)
        .map_err(|e| invalid(format!("{ENV_TASK} is not a chunk task: {e}")))?;
    if (args.mode == Mode::Fetch) != matches!(task.work, Work::Fetch { .. }) {
        return Err(invalid(
            "`worker fetch` runs fetch tasks only, `worker` the others".into(),
        ));
    }
    let policy = match &args.address_policy {
        Some(text) => AddressPolicy::from_env(text)
            .map_err(|e| invalid(format!("{ENV_ADDRESS_POLICY}: {e}")))?,
        None => AddressPolicy::default(),
    };
    // Before any upload starts: a SIGTERM (the pod deleted) must find the chunk able to abort it.
    let stopping = s3flow::shutdown::on_signal()
        .map_err(|e| invalid(format!("installing the signal handlers: {e}")))?;
    let policy = Arc::new(policy);
    let s3 = client(&S3Settings {
        endpoint: args.endpoint,
        region: args.region,
        force_path_style: args.force_path_style,
        credentials: args.identity.credentials(&policy),
        policy: Some(policy),
    })
    .await
    .map_err(|e| invalid(e.to_string()))?;
    let report = run_until_stopped(&s3, &task, Stop::on(stopping)).await?;
    // Bad data from a start state that may be a wrong guess goes to the controller to judge.
    if report.start_is_certain(&task)
        && let Some(error) = report.bad_data(&task.layout)
    {
        return Err(error.into());
    }
    let full = serde_json::to_value(&report).map_err(|e| invalid(e.to_string()))?;
    let Some(location) = args.report_to else {
        return Ok(full);
    };
    let report_at =
        S3Url::object(&location).map_err(|e| invalid(format!("{ENV_REPORT_TO}: {e}")))?;
    manifest::put(&s3, &report_at.bucket, &report_at.key, &full).await?;
    if full.to_string().len() < TERMINATION_MESSAGE_LIMIT {
        Ok(full)
    } else {
        Ok(serde_json::json!({"index": report.index, "reportAt": location}))
    }
}

/// How long a stopped chunk that writes rows gets to abort its upload.
const ABORT_GRACE: Duration = Duration::from_secs(10);

/// Runs the chunk until it ends or a stop comes: a chunk writing rows then aborts its upload
/// (within [`ABORT_GRACE`]); one that does not has nothing to leave behind and ends at once.
async fn run_until_stopped(
    s3: &aws_sdk_s3::Client,
    task: &ChunkTask,
    mut stop: Stop,
) -> Result<ChunkReport, ScanError> {
    let writes_rows = matches!(
        &task.work,
        Work::Query {
            output: Some(_),
            ..
        }
    );
    let chunk = run_chunk(s3, task, Arc::new(AtomicU64::new(0)), stop.clone());
    tokio::pin!(chunk);
    tokio::select! {
        report = &mut chunk => report,
        () = stop.requested() => {
            if writes_rows {
                let _ = tokio::time::timeout(ABORT_GRACE, &mut chunk).await;
            }
            Err(ScanError::Stopped)
        }
    }
}
