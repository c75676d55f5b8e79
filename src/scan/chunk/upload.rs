//! A chunk's row output on its way to S3: one PUT when it fits one buffer, else a multipart upload
//! recorded (by exact id) before its first part, so that a killed chunk's upload is aborted by
//! that id and nothing else.

use aws_sdk_s3::Client;
use aws_sdk_s3::types::CompletedPart;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::rows::RowBatch;
use super::task::{Output, UploadRecord};
use crate::s3::{MultipartWriter, NewObject, read_object};
use crate::scan::{ScanError, classify, delete_object, put_object, read_failure};
use crate::shutdown::Stop;

/// Largest upload record read back (a few hundred bytes when genuine).
const UPLOAD_RECORD_LIMIT: usize = 4 << 10;

/// Aborts the upload chunk `index` of scan `run` recorded, if it recorded one: exactly that upload
/// of exactly its part key, whatever else the record says. True when there was one.
pub async fn abort_recorded_upload(
    s3: &Client,
    output: &Output,
    index: u32,
    run: &str,
) -> Result<bool, ScanError> {
    let record_key = output.upload_record_key(index);
    let bytes = match read_object(s3, &output.bucket, &record_key, UPLOAD_RECORD_LIMIT).await {
        Ok(bytes) => bytes,
        Err(failure) => {
            return match read_failure(failure) {
                ScanError::ObjectNotFound(_) => Ok(false),
                other => Err(other),
            };
        }
    };
    let ours = serde_json::from_slice::<UploadRecord>(&bytes)
        .ok()
        .filter(|r| r.run == run && r.key == output.part_key(index))
        .map(|r| r.upload_id);
    if let Some(upload_id) = &ours {
        MultipartWriter::of(s3, &output.bucket, &output.part_key(index), upload_id)
            .abort()
            .await
            .map_err(classify)?;
    }
    delete_object(s3, &output.bucket, &record_key).await?;
    Ok(ours.is_some())
}

/// Uploads a chunk's row output: one PUT when it fits one buffer, else a multipart upload (an
/// earlier attempt's recorded upload is aborted first). No rows: a part left by an earlier run of
/// the chunk is deleted. The part's key, when rows were written.
pub(crate) async fn upload_part(
    s3: &Client,
    output: &Output,
    (index, run): (u32, &str),
    mut batches: mpsc::Receiver<RowBatch>,
    stop: Stop,
) -> Result<Option<String>, ScanError> {
    let key = output.part_key(index);
    let first = match next_rows(&mut batches).await {
        Some(Some(rows)) => rows,
        Some(None) => {
            delete_object(s3, &output.bucket, &key).await?;
            return Ok(None);
        }
        // The parser failed: nothing is written; its error is the chunk's.
        None => return Ok(None),
    };
    let second = match next_rows(&mut batches).await {
        Some(Some(rows)) => rows,
        Some(None) => {
            put_object(s3, &output.bucket, &key, first, None).await?;
            return Ok(Some(key));
        }
        None => return Ok(None),
    };
    let parts =
        async |writer: &MultipartWriter| send_parts(writer, [first, second], &mut batches).await;
    recorded_upload(s3, output, (index, run), parts, stop).await?;
    Ok(Some(key))
}

/// The next rows of a chunk's output (`Some(None)` at its end, `None` when it stopped short);
/// its start state is no matter to a part.
async fn next_rows(batches: &mut mpsc::Receiver<RowBatch>) -> Option<Option<Vec<u8>>> {
    loop {
        match batches.recv().await? {
            RowBatch::Start(_) => continue,
            RowBatch::Rows(rows) => return Some(Some(rows)),
            RowBatch::End => return Some(None),
        }
    }
}

/// A multipart upload of chunk `index`'s part, recorded (by exact id) before `parts` sends any
/// part: completed from what `parts` sent, or aborted when that or the completion fails or a
/// stop comes. An earlier run's recorded upload of the chunk is aborted first.
async fn recorded_upload(
    s3: &Client,
    output: &Output,
    (index, run): (u32, &str),
    parts: impl AsyncFnOnce(&MultipartWriter) -> Result<Vec<CompletedPart>, ScanError>,
    mut stop: Stop,
) -> Result<(), ScanError> {
    abort_recorded_upload(s3, output, index, run).await?;
    let key = output.part_key(index);
    let writer = MultipartWriter::create(s3, &output.bucket, &key, &NewObject::default())
        .await
        .map_err(classify)?;
    let record_key = output.upload_record_key(index);
    if let Err(error) = record(s3, &output.bucket, &record_key, run, &writer).await {
        let _ = writer.abort().await;
        return Err(error);
    }
    let completed = tokio::select! {
        sent = parts(&writer) => match sent {
            Ok(parts) => writer.complete(parts, false).await.map_err(classify),
            Err(error) => Err(error),
        },
        () = stop.requested() => Err(ScanError::Stopped),
    };
    if let Err(error) = completed {
        // Left recorded when the abort fails: the scan's cleanup aborts it from the record.
        if writer.abort().await.is_ok() {
            let _ = delete_object(s3, &output.bucket, &record_key).await;
        }
        return Err(error);
    }
    delete_object(s3, &output.bucket, &record_key).await
}

/// Records the upload's id (with the scan's and the key) before any part is sent.
async fn record(
    s3: &Client,
    bucket: &str,
    record_key: &str,
    run: &str,
    writer: &MultipartWriter,
) -> Result<(), ScanError> {
    let (_, _, key) = writer.object();
    let record = UploadRecord {
        run: run.to_string(),
        key: key.to_string(),
        upload_id: writer.upload_id().to_string(),
    };
    let body = serde_json::to_vec(&record).map_err(|source| ScanError::Serialize {
        what: "the upload record",
        source: Box::new(source),
    })?;
    put_object(s3, bucket, record_key, body, Some("application/json")).await
}

/// Sends the first buffers, then every batch until the end, one part each.
async fn send_parts(
    writer: &MultipartWriter,
    first: [Vec<u8>; 2],
    batches: &mut mpsc::Receiver<RowBatch>,
) -> Result<Vec<CompletedPart>, ScanError> {
    let mut completed = Vec::new();
    for buffer in first {
        let number = completed.len() as i32 + 1;
        let part = writer.upload_part(number, Bytes::from(buffer)).await;
        completed.push(part.map_err(classify)?);
    }
    loop {
        match next_rows(batches).await {
            Some(Some(buffer)) => {
                let number = completed.len() as i32 + 1;
                let part = writer.upload_part(number, Bytes::from(buffer)).await;
                completed.push(part.map_err(classify)?);
            }
            Some(None) => return Ok(completed),
            None => return Err(ScanError::OutputClosed),
        }
    }
}
