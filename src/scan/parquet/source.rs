//! arrow-rs's async Parquet reader over s3flow's own ranged GETs: every read is pinned to the
//! scan's ETag and resumes a broken body like every other read, and the column chunks of a row
//! group are fetched concurrently, near ranges coalesced into one GET.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_s3::Client;
use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use futures::{StreamExt, TryStreamExt};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::ParquetMetaData;

use crate::s3::RangeStream;
use crate::scan::{ScanError, read_failure};

/// Ranges closer than this are read by one GET: a request costs more than this many bytes.
const COALESCE_GAP: u64 = 1 << 20;

/// Longest coalesced GET, so that one large range does not wait on another.
const MAX_COALESCED: u64 = 64 << 20;

/// GETs in flight per chunk.
const CONCURRENT_GETS: usize = 8;

/// One Parquet object, read at the version the scan planned.
#[derive(Clone)]
pub(crate) struct S3Source {
    pub(crate) s3: Client,
    pub(crate) bucket: String,
    pub(crate) key: String,
    pub(crate) etag: String,
    pub(crate) metadata: Arc<ParquetMetaData>,
    /// Bytes fetched so far (data pages only: the footer is read once, when planning).
    pub(crate) fetched: Arc<AtomicU64>,
}

impl S3Source {
    async fn read(&self, range: Range<u64>) -> Result<Bytes, ParquetError> {
        let length = range.end.saturating_sub(range.start);
        let bytes = RangeStream::new(
            &self.s3,
            &self.bucket,
            &self.key,
            Some(&self.etag),
            (range.start, range.end),
        )
        .collect(length as usize)
        .await
        .map_err(|e| ParquetError::External(Box::new(read_failure(e))))?;
        if bytes.len() as u64 != length {
            return Err(ParquetError::External(Box::new(ScanError::ObjectChanged(
                format!(
                    "s3://{}/{} ended before byte {}",
                    self.bucket, self.key, range.end
                ),
            ))));
        }
        self.fetched.fetch_add(length, Ordering::Relaxed);
        Ok(Bytes::from(bytes))
    }
}

impl AsyncFileReader for S3Source {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        self.read(range).boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            let merged = coalesce(&ranges, COALESCE_GAP, MAX_COALESCED);
            let fetched: Vec<Bytes> = futures::stream::iter(merged.iter().cloned())
                .map(|range| self.read(range))
                .buffered(CONCURRENT_GETS)
                .try_collect()
                .await?;
            ranges
                .iter()
                .map(|range| {
                    if range.start >= range.end {
                        return Ok(Bytes::new());
                    }
                    let at = merged.partition_point(|m| m.end < range.end);
                    match merged.get(at).zip(fetched.get(at)) {
                        Some((m, bytes)) if m.start <= range.start => {
                            let from = (range.start - m.start) as usize;
                            Ok(bytes.slice(from..from + (range.end - range.start) as usize))
                        }
                        _ => Err(ParquetError::General("a range was not fetched".into())),
                    }
                })
                .collect()
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        futures::future::ready(Ok(self.metadata.clone())).boxed()
    }
}

/// Sorted, disjoint ranges covering `ranges`: ranges less than `gap` apart are merged while the
/// merged range stays within `max_len` (a single longer range stays whole).
pub(crate) fn coalesce(ranges: &[Range<u64>], gap: u64, max_len: u64) -> Vec<Range<u64>> {
    let mut sorted: Vec<Range<u64>> = ranges.iter().filter(|r| r.start < r.end).cloned().collect();
    sorted.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::new();
    for range in sorted {
        match merged.last_mut() {
            Some(last)
                if range.start < last.end
                    || (range.start <= last.end.saturating_add(gap)
                        && range.end - last.start <= max_len) =>
            {
                last.end = last.end.max(range.end);
            }
            _ => merged.push(range),
        }
    }
    merged
}

/// The scan error inside a reader error, when the reader failed because a read did.
pub(crate) fn scan_error(error: ParquetError, location: &str) -> ScanError {
    match error {
        ParquetError::External(inner) => match inner.downcast::<ScanError>() {
            Ok(scan) => *scan,
            Err(other) => ScanError::InvalidObject(format!("{location}: {other}")),
        },
        other => ScanError::InvalidObject(format!("{location} does not decode: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Byte ranges as `(start, end)` pairs.
    type Spans<'a> = &'a [(u64, u64)];

    #[test]
    fn near_ranges_are_read_together() {
        let cases: &[(Spans, Spans)] = &[
            (&[], &[]),
            (&[(0, 10)], &[(0, 10)]),
            (&[(20, 30), (0, 10)], &[(0, 30)]),
            (&[(0, 10), (5, 8)], &[(0, 10)]),
            (&[(0, 10), (200, 300)], &[(0, 10), (200, 300)]),
            // Merging would exceed the longest GET.
            (&[(0, 60), (90, 150)], &[(0, 60), (90, 150)]),
            // Empty ranges need no GET.
            (&[(5, 5)], &[]),
        ];
        let ranges =
            |spans: Spans| -> Vec<Range<u64>> { spans.iter().map(|(s, e)| *s..*e).collect() };
        for (given, want) in cases {
            assert_eq!(
                coalesce(&ranges(given), 100, 100),
                ranges(want),
                "{given:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn coalesced_ranges_cover_each_range_once(
            ranges in proptest::collection::vec((0u64..10_000, 1u64..500), 0..50),
            gap in 0u64..1000,
            max_len in 1u64..3000,
        ) {
            let ranges: Vec<Range<u64>> = ranges.iter().map(|(s, l)| *s..s + l).collect();
            let merged = coalesce(&ranges, gap, max_len);
            for pair in merged.windows(2) {
                proptest::prop_assert!(pair[0].end <= pair[1].start);
            }
            for range in &ranges {
                let at = merged.partition_point(|m| m.end < range.end);
                let m = &merged[at];
                proptest::prop_assert!(m.start <= range.start && range.end <= m.end);
            }
        }
    }
}
