//! The parse loop of one chunk: its bytes from the byte before it (or the object's start, when
//! gzipped), the split scanner over the chunk's range, and the extractor from its first record on.

use std::io::BufRead;
use std::sync::atomic::{AtomicU64, Ordering};

use super::extract::Extractor;
use crate::scan::ScanError;
use crate::scan::chunk::fetch::read_error;
use crate::scan::chunk::sink::{RowsTo, Sink};
use crate::scan::chunk::task::{ChunkReport, ChunkTask};
use crate::scan::sql::Query;
use crate::scan::text::split::{Machine, SplitScanner, State, guess_start};

/// Reads the chunk from `source` (starting at the byte before the chunk, or at the object's start
/// when gzipped) and processes its records.
pub(crate) fn parse_chunk(
    task: &ChunkTask,
    query: Option<&Query>,
    source: impl BufRead + Send + 'static,
    rows_to: Option<RowsTo>,
    progress: &AtomicU64,
) -> Result<ChunkReport, ScanError> {
    let layout = &task.layout;
    let (start, end) = layout.range(task.index);
    // A stream that does not decode names its object and compression: one of many objects may
    // be the broken one.
    let undecodable = |error: std::io::Error| match read_error(error) {
        ScanError::Decode(error) => ScanError::Decode(std::io::Error::new(
            error.kind(),
            format!(
                "{} ({}): {error}",
                layout.object.url(),
                layout.compression.name()
            ),
        )),
        other => other,
    };
    let mut source = layout.compression.decoder(source).map_err(undecodable)?;
    let mut parse = ChunkParse {
        machine: Machine::new(layout.format.dialect()),
        split: SplitScanner::new(end - start),
        sink: Sink::new(task, query, rows_to)?,
        extractor: None,
        format: layout.format,
        range: (start, end),
    };
    // Gzip streams are read from the object's start; the header row before the chunk is skipped.
    let first_byte = start - u64::from(!layout.whole_stream() && start > layout.data_start);
    let mut position = if layout.whole_stream() { 0 } else { first_byte };
    let mut assumed = task.start_state;
    let mut seen_start = false;
    loop {
        let block = source.fill_buf().map_err(undecodable)?;
        let read = block.len();
        if read == 0 {
            break;
        }
        let mut data = block;
        if position < first_byte {
            let skip = (first_byte - position).min(data.len() as u64);
            data = &data[skip as usize..];
            position += skip;
        }
        if !seen_start && !data.is_empty() {
            seen_start = true;
            let before = (position < start).then(|| data[0]);
            if before.is_some() {
                data = &data[1..];
                position += 1;
            }
            let state = assumed.unwrap_or_else(|| guess_start(&parse.machine, before));
            assumed = Some(state);
            parse.sink.start(state)?;
        }
        let state = match assumed {
            Some(state) if !data.is_empty() => state,
            _ => {
                source.consume(read);
                continue;
            }
        };
        let in_range = end.saturating_sub(position).min(data.len() as u64) as usize;
        progress.fetch_add(in_range as u64, Ordering::Relaxed);
        let done = parse.feed(data, position, in_range, state)?;
        position += data.len() as u64;
        source.consume(read);
        if position >= end && done {
            break;
        }
    }
    if !layout.whole_stream() && position < end {
        return Err(ScanError::ObjectChanged(format!(
            "{} ended at byte {position}, before the chunk's end {end}",
            layout.object.url()
        )));
    }
    let bytes = if layout.whole_stream() {
        position.saturating_sub(start)
    } else {
        end - start
    };
    parse.finish(assumed, bytes)
}

/// One chunk's parse: the split scanner over its range, the extractor from its first record on.
struct ChunkParse<'q> {
    pub(crate) machine: Machine,
    pub(crate) split: SplitScanner,
    pub(crate) sink: Sink<'q>,
    pub(crate) extractor: Option<Extractor>,
    pub(crate) format: crate::scan::InputFormat,
    /// The chunk's byte range `[start, end)`.
    pub(crate) range: (u64, u64),
}

impl ChunkParse<'_> {
    /// The bytes `data` at `position` (its first `in_range` within the chunk), records read from
    /// start state `state`; true once the chunk's last record is complete (or none starts in it).
    pub(crate) fn feed(
        &mut self,
        data: &[u8],
        position: u64,
        in_range: usize,
        state: State,
    ) -> Result<bool, ScanError> {
        let (start, end) = self.range;
        let done = match &mut self.extractor {
            Some(extractor) => extractor.feed(data, &mut self.sink)?,
            None => {
                self.split.feed(&self.machine, &data[..in_range]);
                match self.split.first_record(state) {
                    Some(first) => {
                        let at = start + first;
                        let new = Extractor::new(self.format, at, end, &self.sink);
                        let started = self.extractor.insert(new);
                        let rest = &data[(at - position) as usize..];
                        // An empty input would read as the end of the object.
                        !rest.is_empty() && started.feed(rest, &mut self.sink)?
                    }
                    None => false,
                }
            }
        };
        // The split scanner runs the bytes the extractor has not: once settled, it follows the
        // extractor's trajectory and skips to the extractor's last record end.
        let range_end = position + in_range as u64;
        let mut fed = start + self.split.offset();
        if let Some(boundary) = self.extractor.as_ref().map(Extractor::record_start)
            && in_range > 0
            && self.split.settled()
            && fed < boundary
            && boundary <= range_end
        {
            self.split.skip_to_record_end(boundary - start);
            fed = boundary;
        }
        if in_range > 0 && fed < range_end {
            self.split
                .feed(&self.machine, &data[(fed - position) as usize..in_range]);
        }
        Ok(done || self.extractor.is_none())
    }

    /// At the end of what was read: the last record, and the report.
    pub(crate) fn finish(
        mut self,
        assumed: Option<State>,
        bytes: u64,
    ) -> Result<ChunkReport, ScanError> {
        if let Some(extractor) = &mut self.extractor {
            extractor.finish(&mut self.sink)?;
        }
        let assumed = assumed.unwrap_or(guess_start(&self.machine, None));
        self.sink.finish(assumed, self.split.finish(), bytes)
    }
}
