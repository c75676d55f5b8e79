//! One chunk, whatever its format: read its byte range (and past its end to finish its last
//! record), find its records from its start state, and run the query on them or write them to a
//! local file. What a format does lives in its own directory (`scan::text`, `scan::parquet`);
//! what every format shares lives here.
//!
//! Reading is async (`fetch`: ranged GETs pinned to the object's ETag); parsing runs on a blocking
//! thread (the text parse loop, its extractors and record adapters, and `sink`) fed through a
//! bounded channel, so memory stays a few buffers per chunk whatever its size; row output goes up
//! while parsing goes on (`rows`, `upload`). `task` holds what a chunk is given and what it
//! reports.

pub(crate) mod fetch;
pub(crate) mod rows;
pub(crate) mod sink;
pub(crate) mod task;
pub(crate) mod upload;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use aws_sdk_s3::Client;
use tokio::sync::mpsc;

use crate::shutdown::Stop;

pub use task::{
    BadRecord, ChunkObject, ChunkReport, ChunkTask, Output, OutputFormat, PieceRead, RowGroupsRead,
    UploadRecord, Work, manifest_key, scope_of,
};
pub use upload::abort_recorded_upload;

use super::ScanError;
use crate::scan::text::parse::parse_chunk;
use fetch::{ChannelReader, fetch};
use rows::TextFormat;
pub use rows::{LocalRows, RowBatch};
use sink::RowsTo;
use upload::upload_part;

/// Runs one chunk. `progress` counts the chunk's bytes as they are read.
pub async fn run_chunk(
    s3: &Client,
    task: &ChunkTask,
    progress: Arc<AtomicU64>,
    stop: Stop,
) -> Result<ChunkReport, ScanError> {
    run_chunk_to(s3, task, progress, stop, None).await
}

/// [`run_chunk`], its selected rows streamed to `local` when the task has no output of its own.
pub async fn run_chunk_to(
    s3: &Client,
    task: &ChunkTask,
    progress: Arc<AtomicU64>,
    stop: Stop,
    local: Option<LocalRows>,
) -> Result<ChunkReport, ScanError> {
    match &task.layout.plan {
        Some(plan) => {
            crate::scan::objects::pieces::run_planned_chunk(s3, task, plan, progress, stop).await
        }
        None => run_object_chunk(s3, task, progress, stop, local).await,
    }
}

/// [`run_chunk_to`] of a chunk of one object.
pub(crate) async fn run_object_chunk(
    s3: &Client,
    task: &ChunkTask,
    progress: Arc<AtomicU64>,
    stop: Stop,
    local: Option<LocalRows>,
) -> Result<ChunkReport, ScanError> {
    let layout = &task.layout;
    let (start, end) = layout.range(task.index);
    let query = match &task.work {
        Work::Query { sql, output } => {
            let mut query = layout.compile(sql)?;
            if let Some(keep) = task.keep_rows {
                query.limit = Some(query.limit.map_or(keep, |limit| limit.min(keep)));
            }
            if let Some(output) = output {
                layout
                    .format
                    .check_output(output.format, query.output_names().is_some())?;
            }
            Some(query)
        }
        Work::Fetch { .. } => None,
    };
    if layout.parquet.is_some() {
        return crate::scan::parquet::reader::run_parquet_chunk(
            s3, task, query, progress, stop, local,
        )
        .await;
    }
    // The byte before the chunk tells its likely start state.
    let read_from = if layout.whole_stream() {
        0
    } else {
        start - u64::from(start > layout.data_start)
    };
    let (bytes_tx, bytes_rx) = mpsc::channel(8);
    let fetch = fetch(s3.clone(), layout.clone(), read_from, end, bytes_tx);
    let (parts_tx, parts_rx) = mpsc::channel::<RowBatch>(1);
    let output = match &task.work {
        Work::Query {
            output: Some(output),
            ..
        } => Some(output.clone()),
        _ => None,
    };
    let rows_to = match (&output, local) {
        (Some(output), _) => Some(RowsTo {
            format: TextFormat::of(output.format)?,
            header: true,
            parts: parts_tx,
        }),
        (None, Some(local)) => Some(RowsTo {
            format: TextFormat::of(local.format)?,
            header: false,
            parts: local.to,
        }),
        (None, None) => None,
    };
    let upload = async {
        match &output {
            Some(output) => upload_part(s3, output, (task.index, &task.run), parts_rx, stop).await,
            None => Ok(None),
        }
    };
    let parse = {
        let task = task.clone();
        tokio::task::spawn_blocking(move || {
            let source = ChannelReader::new(bytes_rx);
            parse_chunk(&task, query.as_ref(), source, rows_to, &progress)
        })
    };
    let fetching = tokio::spawn(fetch);
    let (parsed, uploaded) = tokio::join!(parse, upload);
    // The parser stops reading once its last record is complete: the fetch ends with it.
    fetching.abort();
    with_part(parsed.map_err(ScanError::Parser)?, uploaded)
}

/// A chunk's report with the part its rows were uploaded to, or why it failed.
fn with_part(
    parsed: Result<ChunkReport, ScanError>,
    uploaded: Result<Option<String>, ScanError>,
) -> Result<ChunkReport, ScanError> {
    let (mut report, part) = ran_and_uploaded(parsed, uploaded)?;
    report.part = part;
    Ok(report)
}

/// What ran and the part its rows were uploaded to, or why either failed.
pub(crate) fn ran_and_uploaded<T>(
    ran: Result<T, ScanError>,
    uploaded: Result<Option<String>, ScanError>,
) -> Result<(T, Option<String>), ScanError> {
    match (ran, uploaded) {
        // The parser stopped because the upload did: the upload's error is the cause.
        (Err(ScanError::OutputClosed), Err(upload)) => Err(upload),
        (ran, uploaded) => Ok((ran?, uploaded?)),
    }
}

#[cfg(test)]
pub(crate) mod tests;
