//! `s3flow worker [fetch]`: one chunk of an S3ParallelScan, inside a chunk Job. Everything comes
//! from the environment the Job sets; the result leaves as the termination message.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use clap::{Args, ValueEnum};
use s3flow::s3::{S3Settings, client};
use s3flow::scan::chunk::Work;
use s3flow::scan::{ChunkReport, ChunkTask, ScanError, manifest, run_chunk};

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
pub struct WorkerArgs {
    #[arg(value_enum, default_value = "run")]
    mode: Mode,
    /// The chunk task as JSON.
    #[arg(long, env = "S3FLOW_CHUNK_TASK", hide_env_values = true)]
    task: String,
    /// Where the full report is stored as well, s3://bucket/key.
    #[arg(long, env = "S3FLOW_REPORT_TO")]
    report_to: Option<String>,
    /// Endpoint of an S3-compatible store.
    #[arg(long, env = "S3FLOW_S3_ENDPOINT")]
    endpoint: Option<String>,
    /// Region to sign for.
    #[arg(long, env = "S3FLOW_S3_REGION")]
    region: Option<String>,
    /// Address buckets as endpoint/bucket.
    #[arg(long, env = "S3FLOW_S3_FORCE_PATH_STYLE")]
    force_path_style: bool,
}

/// A worker's failure and the exit code that tells the Job whether retrying can help.
pub struct WorkerFailure {
    pub error: ScanError,
}

impl WorkerFailure {
    pub fn exit_code(&self) -> i32 {
        if self.error.is_transient() {
            1
        } else {
            s3flow::scan::BAD_DATA_EXIT_CODE
        }
    }

    pub fn message(&self) -> String {
        serde_json::json!({"error": self.error.to_string(), "reason": self.error.reason()})
            .to_string()
    }
}

pub async fn run(args: WorkerArgs) -> Result<serde_json::Value, WorkerFailure> {
    let invalid = |message: String| WorkerFailure {
        error: ScanError::InvalidScan(message),
    };
    let task: ChunkTask = serde_json::from_str(&args.task)
        .map_err(|e| invalid(format!("S3FLOW_CHUNK_TASK is not a chunk task: {e}")))?;
    if (args.mode == Mode::Fetch) != matches!(task.work, Work::Fetch { .. }) {
        return Err(invalid(
            "`worker fetch` runs fetch tasks only, `worker` the others".into(),
        ));
    }
    let s3 = client(&S3Settings {
        endpoint: args.endpoint,
        region: args.region,
        force_path_style: args.force_path_style,
        credentials: None,
    })
    .await;
    let report = run_chunk(&s3, &task, Arc::new(AtomicU64::new(0)))
        .await
        .map_err(|error| WorkerFailure { error })?;
    // Bad data from a start state that may be a wrong guess goes to the controller to judge.
    if ChunkReport::start_is_certain(&task)
        && let Some(error) = report.bad_data(&task.layout)
    {
        return Err(WorkerFailure { error });
    }
    let full = serde_json::to_value(&report).expect("reports serialize");
    let Some(location) = args.report_to else {
        return Ok(full);
    };
    let (bucket, key) = location
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .ok_or_else(|| {
            invalid(format!(
                "S3FLOW_REPORT_TO {location:?} is not s3://bucket/key"
            ))
        })?;
    manifest::put(&s3, bucket, key, &full)
        .await
        .map_err(|error| WorkerFailure { error })?;
    if full.to_string().len() < TERMINATION_MESSAGE_LIMIT {
        Ok(full)
    } else {
        Ok(serde_json::json!({"index": report.index, "reportAt": location}))
    }
}
