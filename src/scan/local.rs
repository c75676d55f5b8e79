//! A whole scan on one machine: the chunks run as tasks, checked and merged in chunk order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use aws_sdk_s3::Client;
use futures::StreamExt;
use serde::Serialize;

use super::chunk::{ChunkReport, ChunkTask, Output, Work, run_chunk};
use super::plan::Layout;
use super::sql::Query;
use super::verify::{Verdict, Verifier};
use super::{ScanError, manifest};

/// The merged outcome of a scan.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScanSummary {
    pub chunks: u32,
    pub records: u64,
    pub bytes: u64,
    pub rows: u64,
    /// Chunks run again from their true start state after a wrong guess.
    pub reruns: u32,
    pub result: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
}

/// Live counts of a running scan.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Bytes read within chunk ranges.
    pub bytes: Arc<AtomicU64>,
    /// Chunks accepted.
    pub chunks: Arc<AtomicU64>,
}

/// An id for one run of a scan on this machine, for its chunks' upload records.
fn run_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("local-{:x}", nanos ^ u128::from(std::process::id()) << 64)
}

/// Runs every chunk of `layout` with at most `parallelism` at once.
pub async fn scan(
    s3: &Client,
    layout: &Layout,
    (query, sql): (&Query, &str),
    output: Option<Output>,
    parallelism: usize,
    counters: &Counters,
) -> Result<ScanSummary, ScanError> {
    let count = layout.chunk_count();
    let run = run_id();
    let task = |index, start_state| ChunkTask {
        layout: layout.clone(),
        index,
        start_state,
        work: Work::Query {
            sql: sql.to_string(),
            output: output.clone(),
        },
        run: run.clone(),
    };
    let mut runs = futures::stream::iter(0..count)
        .map(|index| {
            let task = task(index, None);
            let progress = counters.bytes.clone();
            async move { run_chunk(s3, &task, progress).await }
        })
        .buffer_unordered(parallelism.max(1));
    let mut verifier = Verifier::new(query.empty_partials());
    let mut waiting = BTreeMap::new();
    let mut accepted: Vec<ChunkReport> = Vec::with_capacity(count as usize);
    let mut reruns = 0;
    while let Some(report) = runs.next().await {
        let report = report?;
        waiting.insert(report.index, report);
        while let Some(mut report) = waiting.remove(&verifier.next) {
            let mut chunk = task(verifier.next, None);
            loop {
                match verifier.offer(&report, &chunk) {
                    Verdict::Accepted => break,
                    Verdict::Failed(error) => return Err(error),
                    Verdict::RunFrom(state) => {
                        reruns += 1;
                        chunk = task(report.index, Some(state));
                        report = run_chunk(s3, &chunk, Arc::new(AtomicU64::new(0))).await?;
                    }
                }
            }
            counters
                .chunks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            accepted.push(report);
        }
    }
    verifier.finish(layout)?;
    let rows = query
        .limit
        .map_or(verifier.rows, |limit| verifier.rows.min(limit));
    let result = query.result(&verifier.partials, rows);
    let manifest = match &output {
        Some(output) => {
            manifest::trim_to_limit(s3, output, query.limit, &mut accepted).await?;
            Some(manifest::write(s3, output, layout, &accepted, &result).await?)
        }
        None => None,
    };
    Ok(ScanSummary {
        chunks: count,
        records: verifier.records,
        bytes: verifier.bytes,
        rows,
        reruns,
        result,
        manifest,
    })
}
