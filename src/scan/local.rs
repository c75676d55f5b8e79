//! A whole scan on one machine: the chunks run as tasks, checked and merged in chunk order.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use aws_sdk_s3::Client;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::watch;

use super::chunk::{ChunkReport, ChunkTask, Output, Work, run_chunk};
use super::plan::Layout;
use super::sql::Query;
use super::verify::{Verdict, Verifier};
use super::{ScanError, manifest};
use crate::shutdown::Stop;

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
    /// Parquet: the file's row groups, those skipped by their statistics, and bytes fetched.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row_groups: Option<RowGroupsSummary>,
}

/// What a Parquet scan read of the file's row groups.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RowGroupsSummary {
    pub total: u32,
    pub skipped: u64,
    pub skipped_bytes: u64,
    pub fetched_bytes: u64,
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

/// Runs every chunk of `layout` with at most `parallelism` at once. A failure or a `stop` halts
/// the scan: no chunk starts any more, and those running end (a chunk writing rows aborts its
/// upload) before it returns, so that no upload is left behind.
pub async fn scan(
    s3: &Client,
    layout: &Layout,
    (query, sql): (&Query, &str),
    output: Option<Output>,
    (parallelism, stop): (usize, Stop),
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
    let (halt, halted) = watch::channel(false);
    let halted = Stop::on(halted);
    let mut runs = futures::stream::iter(0..count)
        .map(|index| {
            let task = task(index, None);
            let (progress, halted) = (counters.bytes.clone(), halted.clone());
            async move {
                if halted.is_requested() {
                    return Err(ScanError::Stopped);
                }
                run_chunk(s3, &task, progress, halted).await
            }
        })
        .buffer_unordered(parallelism.max(1));
    let mut merged = Merged {
        verifier: Verifier::new(query.empty_partials()),
        accepted: Vec::with_capacity(count as usize),
        reruns: 0,
    };
    let mut waiting = BTreeMap::new();
    // Offers the chunks in order as they come in; a wrong start state guess runs a chunk again.
    let merge = async |report: ChunkReport| -> Result<(), ScanError> {
        waiting.insert(report.index, report);
        while let Some(mut report) = waiting.remove(&merged.verifier.next) {
            let mut chunk = task(merged.verifier.next, None);
            loop {
                match merged.verifier.offer(&report, &chunk) {
                    Verdict::Accepted => break,
                    Verdict::Failed(error) => return Err(error),
                    Verdict::RunFrom(state) => {
                        merged.reruns += 1;
                        chunk = task(report.index, Some(state));
                        let progress = Arc::new(AtomicU64::new(0));
                        report = run_chunk(s3, &chunk, progress, halted.clone()).await?;
                    }
                }
            }
            counters
                .chunks
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            merged.accepted.push(report);
        }
        Ok(())
    };
    drain(&mut runs, merge, stop, halt).await?;
    summarize(s3, (layout, query), output.as_ref(), &run, merged).await
}

/// Hands the chunks' reports to `merge` until every chunk has ended. The first failure, or a
/// `stop`, halts the chunks (`halt`), and is returned once those still running have ended.
async fn drain(
    runs: &mut (impl futures::Stream<Item = Result<ChunkReport, ScanError>> + Unpin),
    mut merge: impl AsyncFnMut(ChunkReport) -> Result<(), ScanError>,
    mut stop: Stop,
    halt: watch::Sender<bool>,
) -> Result<(), ScanError> {
    let mut failure = None;
    loop {
        let offered = tokio::select! {
            report = runs.next() => match report {
                // Halted: the chunks still running end, their reports unread.
                Some(_) if failure.is_some() => continue,
                Some(Ok(report)) => merge(report).await,
                Some(Err(error)) => Err(error),
                None => break,
            },
            () = stop.requested(), if failure.is_none() => Err(ScanError::Stopped),
        };
        if let Err(error) = offered {
            failure = Some(error);
            let _ = halt.send(true);
        }
    }
    failure.map_or(Ok(()), Err)
}

/// The chunks' reports, accepted in chunk order.
struct Merged {
    verifier: Verifier,
    accepted: Vec<ChunkReport>,
    reruns: u32,
}

/// Checks that the accepted chunks cover the object, writes the manifest (with row output), and
/// sums the scan up.
async fn summarize(
    s3: &Client,
    (layout, query): (&Layout, &Query),
    output: Option<&Output>,
    run: &str,
    merged: Merged,
) -> Result<ScanSummary, ScanError> {
    let Merged {
        verifier,
        accepted,
        reruns,
    } = merged;
    verifier.finish(layout)?;
    let (rows, result) = verifier.result(query);
    let manifest = match output {
        Some(output) => {
            let finish = manifest::Finish {
                layout,
                output: Some(output),
                limit: query.limit,
                run,
                result: &result,
                extra: &|_| None,
            };
            let at = (output.bucket.as_str(), output.prefix.as_str());
            Some(finish.write(s3, at, accepted).await?)
        }
        None => None,
    };
    Ok(ScanSummary {
        chunks: layout.chunk_count(),
        records: verifier.records,
        bytes: verifier.bytes,
        rows,
        reruns,
        result,
        manifest,
        row_groups: layout.parquet.as_ref().map(|parquet| RowGroupsSummary {
            total: parquet.row_groups,
            skipped: verifier.row_groups.skipped,
            skipped_bytes: verifier.row_groups.skipped_bytes,
            fetched_bytes: verifier.row_groups.fetched_bytes,
        }),
    })
}
