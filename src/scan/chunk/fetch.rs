//! Fetching a chunk's bytes: ranged GETs pinned to the planned ETag, first up to a little past the
//! chunk's end, then in growing windows until the parser has its last record; a body that breaks
//! off resumes from its next byte. An object planning read whole in this process is not read
//! again. The parser reads them on a blocking thread through a bounded channel.

use std::io::BufRead;

use aws_sdk_s3::Client;
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::s3::RangeStream;
use crate::scan::plan::Layout;
use crate::scan::{ScanError, read_failure};

/// Bytes past a chunk's end fetched with its first request: most last records end within them.
const OVERHANG: u64 = 64 << 10;

/// Sends the object's bytes from `from` into `tx`: first up to a little past `end`, then in
/// growing windows until the parser hangs up. Every request requires the planned ETag; a body that
/// breaks off resumes from its next byte.
pub(crate) async fn fetch(
    s3: Client,
    layout: Layout,
    from: u64,
    end: u64,
    tx: mpsc::Sender<Result<Bytes, ScanError>>,
) {
    if let Some(rest) = layout.prefetched.from_offset(layout.object.size, from) {
        for frame in rest {
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
        return;
    }
    let mut offset = from;
    let mut window = if layout.whole_stream() {
        layout.object.size
    } else {
        end.saturating_add(OVERHANG) - from
    };
    while offset < layout.object.size {
        let stop = offset.saturating_add(window).min(layout.object.size);
        let version = (layout.object.bucket.as_str(), layout.object.key.as_str());
        let mut range = RangeStream::new(
            &s3,
            version.0,
            version.1,
            Some(&layout.object.etag),
            (offset, stop),
        );
        while let Some(bytes) = range.next().await {
            let sent = match bytes {
                Ok(bytes) => tx.send(Ok(bytes)).await,
                Err(failure) => {
                    let _ = tx.send(Err(read_failure(failure))).await;
                    return;
                }
            };
            if sent.is_err() {
                return;
            }
        }
        offset = stop;
        window = (window.max(1 << 20) * 2).min(16 << 20);
    }
}

/// A blocking reader over the fetched bytes.
pub(crate) struct ChannelReader {
    pub(crate) rx: mpsc::Receiver<Result<Bytes, ScanError>>,
    pub(crate) current: Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let available = self.fill_buf()?;
        let n = buf.len().min(available.len());
        buf[..n].copy_from_slice(&available[..n]);
        self.consume(n);
        Ok(n)
    }
}

/// Hands the fetched buffers to the parser as they are, without copying them.
impl BufRead for ChannelReader {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(bytes)) => self.current = bytes,
                Some(Err(error)) => return Err(std::io::Error::other(error)),
                None => break,
            }
        }
        Ok(&self.current)
    }

    fn consume(&mut self, amount: usize) {
        self.current = self.current.slice(amount..);
    }
}

impl ChannelReader {
    pub(crate) fn new(rx: mpsc::Receiver<Result<Bytes, ScanError>>) -> ChannelReader {
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

/// The scan's error behind a read of the parser: the fetch's own, else the decoder's (gzip).
pub(crate) fn read_error(error: std::io::Error) -> ScanError {
    if !error.get_ref().is_some_and(|inner| inner.is::<ScanError>()) {
        return ScanError::Decode(error);
    }
    match error
        .into_inner()
        .map(|inner| inner.downcast::<ScanError>())
    {
        Some(Ok(scan)) => *scan,
        _ => ScanError::Decode(std::io::Error::other("a read error was lost")),
    }
}
