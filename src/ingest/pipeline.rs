//! One upload's parts from the source to S3: part buffers within the memory bound, parts uploaded
//! while the source is read, parts after the first fetched as parallel ranges when the source
//! allows, the SHA-256 computed on the way, and the upload completed only when length and checksum
//! hold.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use aws_sdk_s3::types::CompletedPart;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::source::{RangeFetcher, SourceReader};
use super::{
    Completion, IngestError, IngestRequest, Outcome, PartSchedule, PlanError, Progress,
    Reservation, ResumableSha256, UploadLog, classify, completed_earlier, tag_sha256,
};
use crate::s3::{HeldPart, MultipartWriter, multipart_etag, quoted_md5};

/// Where a transfer starts: a new upload at byte 0, or an earlier upload at a part it lacks.
pub(super) struct Start {
    pub writer: MultipartWriter,
    pub schedule: PartSchedule,
    pub reader: SourceReader,
    /// The first part to read (0-based).
    pub index: u32,
    pub hasher: ResumableSha256,
    /// Parts S3 already holds, by part number.
    pub held: BTreeMap<i32, HeldPart>,
}

/// A part as the range fetcher hands it on.
enum FetchedPart {
    /// Its bytes, with the permit that counts its buffer against the memory bound.
    Read(Bytes, OwnedSemaphorePermit),
    /// S3 holds it and the resumed hash covers it: it is not read again.
    Held,
}

/// The next part of the transfer.
enum NextPart {
    /// Its bytes, the permit of its buffer, and whether it is the last.
    Read(Bytes, OwnedSemaphorePermit, bool),
    /// S3 holds it and the resumed hash covers it; whether it is the last.
    Held(bool),
}

/// Aborts the task when dropped, so no fetch outlives a failed transfer.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The parts of one upload on their way.
pub(super) struct Pipeline<'a> {
    request: &'a IngestRequest,
    progress: &'a watch::Sender<Progress>,
    writer: MultipartWriter,
    schedule: PartSchedule,
    reader: SourceReader,
    hasher: ResumableSha256,
    held: BTreeMap<i32, HeldPart>,
    /// Held parts (0-based) past the resume point that are not read again: a strong validator
    /// pins their bytes and the resumed hash already covers them.
    covered: BTreeSet<u32>,
    /// Held parts are reused only when their bytes are provably the ones read now: a strong
    /// validator pins them, else a part's ETag must be their MD5.
    strong_validator: bool,
    completed: Vec<CompletedPart>,
    /// Bytes of the source read past the last part filled.
    carry: Option<Bytes>,
    /// Bytes of the source read so far, from its start.
    total: u64,
    /// The next part to read (0-based).
    index: u32,
    parts_total: Option<u32>,
    resumed_at: Option<u64>,
    /// Part buffers alive at once: `concurrency` uploading, one filling, one waiting for a slot.
    buffers: Arc<Semaphore>,
    uploading: Arc<Semaphore>,
    /// Parts after the first as parallel ranged GETs, in order.
    ranged: Option<(
        mpsc::Receiver<Result<FetchedPart, IngestError>>,
        AbortOnDrop,
    )>,
    sending: JoinSet<Result<CompletedPart, IngestError>>,
}

impl<'a> Pipeline<'a> {
    pub(super) fn new(
        request: &'a IngestRequest,
        progress: &'a watch::Sender<Progress>,
        start: Start,
    ) -> Result<Pipeline<'a>, IngestError> {
        let Start {
            writer,
            schedule,
            reader,
            index,
            hasher,
            mut held,
        } = start;
        let length = reader.info.length;
        let resumed_at = (index > 0 || !held.is_empty()).then(|| schedule.offset(index));
        // Parts before the resume point are S3's already.
        let mut completed = Vec::new();
        let mut already = 0;
        for number in 1..=index as i32 {
            let part = held.remove(&number).ok_or_else(|| {
                IngestError::S3(format!("part {number} of the earlier upload is missing"))
            })?;
            already += part.size;
            completed.push(part.completed());
        }
        let strong_validator = reader
            .info
            .validator
            .as_deref()
            .is_some_and(|v| v.starts_with('"'));
        let parts_total = length.map(|l| schedule.parts_for(l));
        let covered = match (strong_validator, length) {
            (true, Some(length)) => covered_parts(&held, schedule, length, hasher.length(), index),
            _ => BTreeSet::new(),
        };
        progress.send_modify(|p| {
            p.upload_id = Some(writer.upload_id().to_string());
            p.total_bytes = length;
            p.parts_total = parts_total;
            p.part_size = schedule.size(0);
            p.validator = reader.info.validator.clone();
            p.bytes_committed = already;
            p.parts_committed = completed.len() as u32;
            p.resumed_at = resumed_at;
        });
        Ok(Pipeline {
            request,
            progress,
            writer,
            total: schedule.offset(index),
            schedule,
            reader,
            hasher,
            held,
            covered,
            strong_validator,
            completed,
            carry: None,
            index,
            parts_total,
            resumed_at,
            buffers: Arc::new(Semaphore::new(request.buffers() as usize)),
            uploading: Arc::new(Semaphore::new(request.concurrency.max(1))),
            ranged: None,
            sending: JoinSet::new(),
        })
    }

    /// Reads, uploads and completes. On an error the caller stops the parts in flight
    /// ([`Pipeline::stop`]) before aborting the upload.
    pub(super) async fn run(
        &mut self,
        memory: &mut Reservation,
        log: &mut impl UploadLog,
    ) -> Result<Outcome, IngestError> {
        loop {
            let (buffer, permit, ended) = match self.next_buffer(memory).await? {
                NextPart::Read(buffer, permit, ended) => (buffer, permit, ended),
                NextPart::Held(last) => {
                    self.keep_held()?;
                    if last {
                        break;
                    }
                    continue;
                }
            };
            if !ended {
                self.fetch_the_rest_as_ranges();
            }
            while let Some(done) = self.sending.try_join_next() {
                self.completed.push(joined(done)?);
            }
            if buffer.is_empty() && self.index > 0 {
                break;
            }
            self.take(buffer, permit).await?;
            if ended {
                break;
            }
        }
        while let Some(done) = self.sending.join_next().await {
            self.completed.push(joined(done)?);
        }
        self.complete(log).await
    }

    /// No part may still be on its way when the upload is aborted, or it could outlive the abort.
    pub(super) async fn stop(&mut self) {
        self.ranged = None;
        self.sending.abort_all();
        while self.sending.join_next().await.is_some() {}
    }

    pub(super) fn writer(&self) -> &MultipartWriter {
        &self.writer
    }

    /// The next part: its bytes, the permit of its buffer, and whether it is the last.
    async fn next_buffer(&mut self, memory: &mut Reservation) -> Result<NextPart, IngestError> {
        let last = Some(self.index + 1) == self.parts_total;
        if let Some((fetched, _)) = &mut self.ranged {
            return match fetched.recv().await {
                Some(Ok(FetchedPart::Read(bytes, permit))) => {
                    Ok(NextPart::Read(bytes, permit, last))
                }
                Some(Ok(FetchedPart::Held)) => Ok(NextPart::Held(last)),
                Some(Err(e)) => Err(e),
                None => Err(IngestError::SourceUnavailable(
                    "the range fetcher stopped".into(),
                )),
            };
        }
        let size = self.schedule.size(self.index);
        // Parts of a source without a length grow: so does their memory.
        memory.ensure(size * self.request.buffers()).await?;
        let permit = self
            .buffers
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| IngestError::S3("part buffers closed".into()))?;
        let (buffer, ended) = fill(&mut self.reader, &mut self.carry, size as usize).await?;
        // With a known length the last part ends the transfer without waiting for EOF.
        Ok(NextPart::Read(buffer, permit, ended || last))
    }

    /// Counts the next part as S3 holds it, without its bytes (see [`covered_parts`]).
    fn keep_held(&mut self) -> Result<(), IngestError> {
        let number = self.index as i32 + 1;
        let part = self.held.remove(&number).ok_or_else(|| {
            IngestError::S3(format!("part {number} of the earlier upload is missing"))
        })?;
        self.total += part.size;
        self.index += 1;
        let total = self.total;
        self.progress.send_modify(|p| p.bytes_read = total);
        self.keep(&part);
        Ok(())
    }

    /// A part S3 holds from the earlier run, completed as it is.
    fn keep(&mut self, part: &HeldPart) {
        self.completed.push(part.completed());
        self.progress.send_modify(|p| {
            p.bytes_committed += part.size;
            p.parts_committed += 1;
        });
    }

    /// With a length, ranges and a validator, the parts after this one come as parallel ranged
    /// GETs instead of from the one stream.
    fn fetch_the_rest_as_ranges(&mut self) {
        let concurrency = self.request.concurrency.max(1);
        let Some(parts_total) = self.parts_total else {
            return;
        };
        if self.ranged.is_some() || concurrency < 2 || !self.reader.ranged() {
            return;
        }
        self.reader.close();
        let (tx, rx) = mpsc::channel(1);
        let task = tokio::spawn(fetch_ranges(
            self.reader.ranges(),
            self.schedule,
            (
                self.index + 1..parts_total,
                std::mem::take(&mut self.covered),
            ),
            self.buffers.clone(),
            concurrency,
            tx,
        ));
        self.ranged = Some((rx, AbortOnDrop(task)));
    }

    /// Hashes, checks and sends one part (or keeps the copy S3 holds of it).
    async fn take(
        &mut self,
        buffer: Bytes,
        permit: OwnedSemaphorePermit,
    ) -> Result<(), IngestError> {
        if PartSchedule::exhausted(self.index) {
            return Err(PlanError::PartsExhausted {
                part_size: self.schedule.size(self.index - 1),
            }
            .into());
        }
        // Bytes before the resumed hash state were hashed by the earlier run.
        if self.total >= self.hasher.length() {
            self.hasher.update(&buffer);
        }
        self.total += buffer.len() as u64;
        // A source longer than promised fails now, not after uploading the excess.
        if let Some(limit) = self.reader.info.length.or(self.request.expected_size)
            && self.total > limit
        {
            return Err(IngestError::SizeMismatch(format!(
                "expected {limit} bytes, the source sent more"
            )));
        }
        let (total, checkpoint) = (self.total, self.hasher.checkpoint());
        self.progress.send_modify(|p| {
            p.bytes_read = total;
            p.checkpoint = checkpoint.or(p.checkpoint);
        });
        let number = self.index as i32 + 1;
        self.index += 1;
        if let Some(part) = self.held.remove(&number)
            && part.size == buffer.len() as u64
            && (self.strong_validator || part.etag.as_deref() == Some(&*quoted_md5(&buffer)))
        {
            self.keep(&part);
            return Ok(());
        }
        let slot = self
            .uploading
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| IngestError::S3("upload slots closed".into()))?;
        let (writer, progress) = (self.writer.clone(), self.progress.clone());
        let floor = self.request.source.floor;
        self.sending.spawn(async move {
            let len = buffer.len() as u64;
            // The floor holds for the S3 endpoint too: a part that takes longer than its bytes at
            // the floor's rate fails instead of holding a transfer slot.
            let deadline = upload_deadline(floor, len);
            let done = match tokio::time::timeout(deadline, writer.upload_part(number, buffer)).await {
                Ok(done) => done.map_err(classify),
                Err(_) => Err(IngestError::DestinationStalled(format!(
                    "part {number} ({len} bytes) took more than {} s, below the floor of {} bytes per second",
                    deadline.as_secs(),
                    floor.min_bytes_per_second
                ))),
            };
            drop((slot, permit));
            if done.is_ok() {
                progress.send_modify(|p| {
                    p.bytes_committed += len;
                    p.parts_committed += 1;
                });
            }
            done
        });
        Ok(())
    }

    /// With every part in: the length and checksum checks, the completion recorded, the upload
    /// completed, the object tagged with its SHA-256.
    async fn complete(&mut self, log: &mut impl UploadLog) -> Result<Outcome, IngestError> {
        let total = self.total;
        if let Some(length) = self.reader.info.length.or(self.request.expected_size)
            && length != total
        {
            return Err(IngestError::SizeMismatch(format!(
                "expected {length} bytes, the source sent {total}"
            )));
        }
        let sha256 = std::mem::take(&mut self.hasher).finalize_hex();
        if let Some(expected) = &self.request.expected_sha256
            && *expected != sha256
        {
            return Err(IngestError::ChecksumMismatch {
                expected: expected.clone(),
                actual: sha256,
            });
        }
        let mut parts = std::mem::take(&mut self.completed);
        parts.sort_by_key(|p| p.part_number);
        let completion = Completion {
            etag: multipart_etag(&parts),
            sha256,
            size: total,
        };
        log.completing(completion.clone()).await;
        let etag = finish_upload(&self.writer, self.request.overwrite, parts, &completion).await?;
        let (s3, bucket, key) = self.writer.object();
        let tag_error = tag_sha256(s3, bucket, key, &completion.sha256)
            .await
            .err()
            .map(|e| e.to_string());
        Ok(Outcome {
            size: total,
            sha256: completion.sha256,
            etag,
            parts: self.index.max(1),
            source_resumes: self.reader.resumes,
            resumed_at: self.resumed_at,
            tag_error,
        })
    }
}

/// CompleteMultipartUpload, without clobbering an object unless `overwrite`. An answer lost on
/// the way (the SDK then retries, and finds the upload gone or the key taken) is told apart from
/// a real refusal by the object now at the key: if it is this upload's, all is done.
async fn finish_upload(
    writer: &MultipartWriter,
    overwrite: bool,
    parts: Vec<CompletedPart>,
    completion: &Completion,
) -> Result<Option<String>, IngestError> {
    let failure = match writer.complete(parts, !overwrite).await {
        Ok(etag) => return Ok(etag),
        Err(failure) => failure,
    };
    let (s3, bucket, key) = writer.object();
    if let Ok(Some((_, etag))) =
        completed_earlier(s3, bucket, key, writer.upload_id(), completion).await
    {
        return Ok(etag);
    }
    Err(match failure.code.as_str() {
        "PreconditionFailed" => IngestError::ObjectExists {
            bucket: bucket.into(),
            key: key.into(),
        },
        _ => classify(failure),
    })
}

/// Reads the next part of `size` bytes from the stream; `true` when the stream ended.
async fn fill(
    reader: &mut SourceReader,
    carry: &mut Option<Bytes>,
    size: usize,
) -> Result<(Bytes, bool), IngestError> {
    let mut buffer = BytesMut::with_capacity(size);
    while buffer.len() < size {
        let chunk = match carry.take() {
            Some(chunk) => chunk,
            None => match reader.next().await? {
                Some(chunk) => chunk,
                None => return Ok((buffer.freeze(), true)),
            },
        };
        let room = size - buffer.len();
        if chunk.len() > room {
            buffer.extend_from_slice(&chunk[..room]);
            *carry = Some(chunk.slice(room..));
        } else {
            buffer.extend_from_slice(&chunk);
        }
    }
    Ok((buffer.freeze(), false))
}

/// Held parts a resumed transfer need not read: past its first part (`index`, which S3 lacks),
/// of the size the schedule gives, and within the `hashed` bytes the resumed SHA-256 state covers.
/// (Parts past `hashed` are read again for the hash, even when S3 holds them.)
fn covered_parts(
    held: &BTreeMap<i32, HeldPart>,
    schedule: PartSchedule,
    length: u64,
    hashed: u64,
    index: u32,
) -> BTreeSet<u32> {
    held.values()
        .filter_map(|part| {
            let i = u32::try_from(part.number.checked_sub(1)?).ok()?;
            let start = schedule.offset(i);
            let size = schedule.size(i).min(length.saturating_sub(start));
            (i > index && part.size == size && start + size <= hashed).then_some(i)
        })
        .collect()
}

/// Fetches parts `indexes` as byte ranges, up to `concurrency` at once (each holding a buffer
/// permit), and hands them on in order; the `covered` ones are handed on as held, unread.
async fn fetch_ranges(
    source: RangeFetcher,
    schedule: PartSchedule,
    (indexes, covered): (std::ops::Range<u32>, BTreeSet<u32>),
    buffers: Arc<Semaphore>,
    concurrency: usize,
    parts: mpsc::Sender<Result<FetchedPart, IngestError>>,
) {
    let mut inflight = FuturesOrdered::new();
    let mut next = indexes.start;
    loop {
        let more = next < indexes.end && inflight.len() < concurrency;
        tokio::select! {
            biased;
            Some(fetched) = inflight.next(), if !inflight.is_empty() => {
                let fetched: Result<FetchedPart, IngestError> = fetched;
                let failed = fetched.is_err();
                if parts.send(fetched).await.is_err() || failed {
                    return;
                }
            }
            permit = buffers.clone().acquire_owned(), if more => {
                let Ok(permit) = permit else {
                    return;
                };
                let (source, start, len) = (source.clone(), schedule.offset(next), schedule.size(next));
                let len = len.min(source.length().saturating_sub(start)) as usize;
                let held = covered.contains(&next);
                inflight.push_back(async move {
                    if held {
                        return Ok(FetchedPart::Held);
                    }
                    source.fetch(start, len).await.map(|bytes| FetchedPart::Read(bytes, permit))
                });
                next += 1;
            }
            else => return,
        }
    }
}

fn joined(
    done: Result<Result<CompletedPart, IngestError>, tokio::task::JoinError>,
) -> Result<CompletedPart, IngestError> {
    done.unwrap_or_else(|e| Err(IngestError::S3(format!("a part upload stopped: {e}"))))
}

/// How long a part of `len` bytes may take to upload under `floor`: its bytes at the floor's
/// rate, at least one window.
fn upload_deadline(floor: crate::floor::ThroughputFloor, len: u64) -> std::time::Duration {
    match floor.min_bytes_per_second {
        0 => std::time::Duration::from_secs(u64::MAX / 4),
        rate => floor.window.max(std::time::Duration::from_secs(len / rate)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::PartSize;

    const MIB: u64 = 1 << 20;

    fn held(parts: &[(i32, u64)]) -> BTreeMap<i32, HeldPart> {
        parts
            .iter()
            .map(|&(number, size)| {
                let part = HeldPart {
                    number,
                    size,
                    etag: None,
                };
                (number, part)
            })
            .collect()
    }

    /// Parts S3 holds (number, size), bytes hashed, the resume index, and the parts not read.
    type Case<'a> = (&'a [(i32, u64)], u64, u32, &'a [u32]);

    #[test]
    fn only_held_parts_past_the_resume_point_and_within_the_hash_are_not_read_again() {
        // Parts of 8 MiB; the last of 4 MiB.
        let length = 36 * MIB;
        let schedule = PartSchedule::new(PartSize::Fixed(8 * MIB), Some(length)).unwrap();
        let eight = 8 * MIB;
        let cases: [Case; 6] = [
            // Resuming at part index 1 (number 2); numbers 3 and 4 held, hash to 32 MiB: both skipped.
            (&[(1, eight), (3, eight), (4, eight)], 32 * MIB, 1, &[2, 3]),
            // The hash ends at 24 MiB: part 4 (24..32 MiB) must be read for it.
            (&[(1, eight), (3, eight), (4, eight)], 24 * MIB, 1, &[2]),
            // The resume point itself is read (S3 lacks it), whatever else holds.
            (&[(2, eight)], 32 * MIB, 1, &[]),
            // A held part of another size than the schedule's is not the same bytes.
            (&[(3, eight - 1)], 32 * MIB, 1, &[]),
            // The shorter last part counts with its own size.
            (&[(5, 4 * MIB)], length, 1, &[4]),
            // Part numbers S3 cannot have (0, negative) are ignored.
            (&[(0, eight), (-3, eight)], length, 0, &[]),
        ];
        for (parts, hashed, index, expected) in cases {
            let covered = covered_parts(&held(parts), schedule, length, hashed, index);
            assert_eq!(
                covered.into_iter().collect::<Vec<_>>(),
                expected,
                "held {parts:?}, hashed {hashed}, index {index}"
            );
        }
    }
}
