//! Extractors: from a chunk's first record on, they find its records (reading past the chunk's end
//! to finish the last one) and hand them to the sink: counted only (CSV `COUNT(*)`), split into the
//! CSV fields the query reads, or whole JSON lines. Every record is bounded in length.

use super::record::CsvRecord;
use crate::scan::InputFormat;
use crate::scan::ScanError;
use crate::scan::chunk::sink::Sink;
use crate::scan::text::split::{Machine, State, byte_masks, quoted_stretches};

/// Finds the records of a chunk from its first record start, reading past the chunk's end to
/// finish its last one.
pub(crate) enum Extractor {
    Csv(Box<CsvExtractor>),
    Lines(LinesExtractor),
    Count(Box<CountExtractor>),
}

impl Extractor {
    pub(crate) fn new(format: InputFormat, at: u64, end: u64, sink: &Sink) -> Extractor {
        let machine = Machine::new(format.dialect());
        let bounds = Bounds {
            end,
            max_record: sink.max_record,
        };
        match format {
            // Counting needs no fields: the record machine alone finds the records, as csv-core
            // would (the split module's tests hold them equal).
            InputFormat::Csv {
                delimiter, quote, ..
            } if sink.counts_only => Extractor::Count(Box::new(CountExtractor::new(
                machine, delimiter, quote, at, bounds,
            ))),
            InputFormat::Csv {
                delimiter, quote, ..
            } => Extractor::Csv(Box::new(CsvExtractor {
                machine,
                delimiter,
                quote,
                fields: sink.csv_fields,
                field_ends: Vec::new(),
                mask_ends: [0; 64],
                quoted: csv_core::ReaderBuilder::new()
                    .delimiter(delimiter)
                    .quote(quote)
                    .build(),
                out: vec![0; 4096],
                out_ends: vec![0; 64],
                pending: Vec::new(),
                state: State::RecordEnd,
                position: at,
                record_start: at,
                bounds,
                done: false,
            })),
            // Parquet chunks never get here: they are read column by column (`columnar`).
            InputFormat::JsonLines | InputFormat::Parquet => Extractor::Lines(LinesExtractor {
                line: Vec::new(),
                position: at,
                record_start: at,
                bounds,
                done: false,
            }),
        }
    }

    /// Where the last record the extractor read ended (the extractor's start before that).
    pub(crate) fn record_start(&self) -> u64 {
        match self {
            Extractor::Csv(extractor) => extractor.record_start,
            Extractor::Lines(extractor) => extractor.record_start,
            Extractor::Count(extractor) => extractor.record_start,
        }
    }

    /// Feeds bytes; true once the chunk's last record is complete.
    pub(crate) fn feed(&mut self, input: &[u8], sink: &mut Sink) -> Result<bool, ScanError> {
        match self {
            Extractor::Csv(extractor) => extractor.feed(input, sink),
            Extractor::Lines(extractor) => extractor.feed(input, sink),
            Extractor::Count(extractor) => Ok(extractor.feed(input)),
        }
    }

    pub(crate) fn finish(&mut self, sink: &mut Sink) -> Result<(), ScanError> {
        match self {
            Extractor::Csv(extractor) => extractor.feed(&[], sink).map(|_| ()),
            Extractor::Count(extractor) => {
                extractor.finish();
                sink.counted(extractor.records);
                if let Some(offset) = extractor.too_long {
                    sink.too_long(offset);
                }
                Ok(())
            }
            Extractor::Lines(extractor) => {
                if !extractor.done
                    && !extractor.line.trim_ascii().is_empty()
                    && extractor.record_start < extractor.bounds.end
                {
                    let line = std::mem::take(&mut extractor.line);
                    sink.raw(&line)?;
                    sink.raw(b"\n")?;
                    sink.json(&line, extractor.record_start)?;
                }
                Ok(())
            }
        }
    }
}

/// Where a extractor stops: the chunk's end (its last record may run past it), and the longest
/// record it reads (a longer one is bad data: it would grow memory without bound).
#[derive(Clone, Copy)]
pub(crate) struct Bounds {
    pub(crate) end: u64,
    pub(crate) max_record: u64,
}

impl Bounds {
    /// Whether a record from `start` that reaches `reach` (its end, or as far as read) is too long.
    pub(crate) fn too_long(self, start: u64, reach: u64) -> bool {
        reach.saturating_sub(start) > self.max_record
    }
}

/// Counts a chunk's CSV records with the record machine: every record ends in exactly one
/// transition to `RecordEnd`, except a last one without a terminator.
pub(crate) struct CountExtractor {
    pub(crate) machine: Machine,
    pub(crate) delimiter: u8,
    pub(crate) quote: u8,
    pub(crate) state: State,
    pub(crate) position: u64,
    pub(crate) record_start: u64,
    pub(crate) bounds: Bounds,
    pub(crate) records: u64,
    /// Where a record longer than the bound starts; counting stops there.
    pub(crate) too_long: Option<u64>,
    pub(crate) done: bool,
}

impl CountExtractor {
    /// Counts the records that start in `at..end`; `at` is a record's start.
    pub(crate) fn new(
        machine: Machine,
        delimiter: u8,
        quote: u8,
        at: u64,
        bounds: Bounds,
    ) -> CountExtractor {
        CountExtractor {
            machine,
            delimiter,
            quote,
            state: State::RecordEnd,
            position: at,
            record_start: at,
            bounds,
            records: 0,
            too_long: None,
            done: false,
        }
    }

    /// True once the next record starts at or after the chunk's end (or a record is too long).
    pub(crate) fn feed(&mut self, mut input: &[u8]) -> bool {
        while !self.done && !input.is_empty() {
            if let Some(window) = input.first_chunk::<64>()
                && self.position + 64 < self.bounds.end
                && self.count_window(window)
            {
                self.position += 64;
                input = &input[64..];
                continue;
            }
            let (state, ended) = self.machine.run_to_record_end(self.state, input);
            self.state = state;
            let Some(at) = ended else {
                self.position += input.len() as u64;
                self.check_length(self.position);
                break;
            };
            self.position += at as u64;
            if self.check_length(self.position) {
                break;
            }
            self.records += 1;
            self.record_start = self.position;
            self.done = self.position >= self.bounds.end;
            input = &input[at..];
        }
        self.done
    }

    /// Stops at the current record when it reaches `reach` and is longer than the bound.
    pub(crate) fn check_length(&mut self, reach: u64) -> bool {
        if self.bounds.too_long(self.record_start, reach) {
            self.too_long = Some(self.record_start);
            self.done = true;
        }
        self.done
    }

    /// Counts the records that end in 64 bytes from bit masks. Quoted fields are where the count
    /// of quotes so far is odd (a doubled quote leaves and re-enters), as long as every quote that
    /// opens one starts a field or follows a quote; otherwise a quote is literal (inside an
    /// unquoted field) and the machine steps: false, nothing done. Outside quoted fields a
    /// terminator ends a record unless a record has not begun yet (at a record's start, or right
    /// after another terminator).
    pub(crate) fn count_window(&mut self, window: &[u8; 64]) -> bool {
        let [quotes, delimiters, newlines, returns] =
            byte_masks(window, [self.quote, self.delimiter, b'\n', b'\r']);
        let terminators = newlines | returns;
        let carried = if self.state == State::InQuoted { !0 } else { 0 };
        let may_open_first = matches!(
            self.state,
            State::RecordEnd | State::BetweenRecords | State::FieldStart | State::QuoteInQuoted
        );
        let (inside, literal) = quoted_stretches(
            quotes,
            delimiters,
            terminators,
            carried,
            u64::from(may_open_first),
        );
        if literal != 0 {
            return false;
        }
        let terminators = terminators & !inside;
        let at_record_start = matches!(self.state, State::RecordEnd | State::BetweenRecords);
        let ends = terminators & !((terminators << 1) | u64::from(at_record_start));
        // The record open at the window's start ends at its first end, or reaches past it.
        let reach = match ends {
            0 => self.position + 64,
            _ => self.position + u64::from(ends.trailing_zeros()) + 1,
        };
        if self.check_length(reach) {
            return true;
        }
        self.records += u64::from(ends.count_ones());
        if ends != 0 {
            self.record_start = self.position + 64 - u64::from(ends.leading_zeros());
        }
        self.state = match (inside >> 63, quotes >> 63, terminators >> 63, ends >> 63) {
            (1, ..) => State::InQuoted,
            // A quote that closes a quoted field (an opening one would be inside).
            (_, 1, ..) => State::QuoteInQuoted,
            (_, _, 1, 1) => State::RecordEnd,
            (_, _, 1, _) => State::BetweenRecords,
            _ => self.machine.step(State::InField, window[63]),
        };
        true
    }

    /// At the end of the object: a last record without a terminator counts too.
    pub(crate) fn finish(&mut self) {
        if !self.done && !matches!(self.state, State::RecordEnd | State::BetweenRecords) {
            self.records += 1;
        }
    }
}

/// Splits a chunk's CSV records into the fields the query reads. The record machine finds the
/// records; when none of those fields is quoted they are the bytes between delimiters (exactly what
/// csv-core returns for them, a quote inside an unquoted field being literal), otherwise csv-core
/// parses the record.
pub(crate) struct CsvExtractor {
    pub(crate) machine: Machine,
    pub(crate) delimiter: u8,
    pub(crate) quote: u8,
    /// How many leading fields the query reads.
    pub(crate) fields: usize,
    pub(crate) field_ends: Vec<usize>,
    /// The field ends found from bit masks (in a window, so at most 64). An array, not a Vec:
    /// reading a Vec's length right after pushes stalls on store forwarding.
    pub(crate) mask_ends: [usize; 64],
    /// Parses records with quoted fields among those read.
    pub(crate) quoted: csv_core::Reader,
    pub(crate) out: Vec<u8>,
    pub(crate) out_ends: Vec<usize>,
    /// The beginning of a record that continues in the next input.
    pub(crate) pending: Vec<u8>,
    pub(crate) state: State,
    pub(crate) position: u64,
    pub(crate) record_start: u64,
    pub(crate) bounds: Bounds,
    pub(crate) done: bool,
}

impl CsvExtractor {
    /// An empty `input` is the end of the object.
    pub(crate) fn feed(&mut self, mut input: &[u8], sink: &mut Sink) -> Result<bool, ScanError> {
        if input.is_empty() {
            // A last record without a terminator.
            if !self.done && !self.pending.is_empty() && self.record_start < self.bounds.end {
                let record = std::mem::take(&mut self.pending);
                sink.raw(&record)?;
                self.record(&record, sink)?;
            }
            self.done = true;
        }
        while !self.done {
            if self.record_start >= self.bounds.end {
                self.done = true;
                break;
            }
            if self.pending.is_empty() {
                // Terminators before a record's first byte are blank lines, not part of it.
                let blank = input
                    .iter()
                    .take_while(|b| matches!(b, b'\r' | b'\n'))
                    .count();
                if blank > 0 {
                    self.state = State::BetweenRecords;
                    input = &input[blank..];
                    self.position += blank as u64;
                }
            }
            if input.is_empty() {
                return Ok(false);
            }
            // At a record's start the fields read are often found from bit masks; the machine
            // then only has to find the record's end.
            let fast = match self.pending.is_empty() {
                true => self.fast_fields(input),
                false => None,
            };
            let (state, ended) = match fast {
                Some((after, State::RecordEnd, _)) => (State::RecordEnd, Some(after)),
                _ => {
                    let (from, state, _) = fast.unwrap_or((0, self.state, 0));
                    let (state, ended) = self.machine.run_to_record_end(state, &input[from..]);
                    (state, ended.map(|at| from + at))
                }
            };
            self.state = state;
            let reach = self.position + ended.unwrap_or(input.len()) as u64;
            if self.bounds.too_long(self.record_start, reach) {
                sink.too_long(self.record_start);
                self.pending = Vec::new();
                self.done = true;
                break;
            }
            let Some(at) = ended else {
                self.pending.extend_from_slice(input);
                self.position += input.len() as u64;
                return Ok(false);
            };
            let (line, rest) = input.split_at(at);
            if let Some((_, _, fields)) = fast {
                sink.raw(line)?;
                let record = CsvRecord {
                    data: &line[..at - 1],
                    ends: &self.mask_ends[..fields],
                    separated: true,
                };
                sink.csv(&record, self.record_start)?;
            } else {
                let mut pending = std::mem::take(&mut self.pending);
                let record = line_with(&mut pending, line);
                sink.raw(record)?;
                self.record(&record[..record.len() - 1], sink)?;
                pending.clear();
                self.pending = pending;
            }
            self.position += at as u64;
            self.record_start = self.position;
            input = rest;
        }
        Ok(true)
    }

    /// Ends of the fields read of the record at the start of `input`, from bit masks of its first
    /// 64 bytes, when they lie before its first quote and terminator (so none of them is quoted),
    /// into `mask_ends`. Returns where the record machine resumes and its state there
    /// (`RecordEnd`: the record ended just before), and how many ends it found. `None` when the
    /// masks cannot tell.
    pub(crate) fn fast_fields(&mut self, input: &[u8]) -> Option<(usize, State, usize)> {
        let window: &[u8; 64] = input.get(..64)?.try_into().ok()?;
        let [delimiters, quotes, newlines, returns] =
            byte_masks(window, [self.delimiter, self.quote, b'\n', b'\r']);
        let terminators = newlines | returns;
        // Delimiters before the first quote or terminator separate unquoted fields; a terminator
        // before any quote ends the record.
        let stop = (quotes | terminators).trailing_zeros() as usize;
        let ends_at_stop = stop < 64 && terminators & (1 << stop) != 0;
        let mut separators = delimiters
            & 1u64
                .checked_shl(stop as u32)
                .map_or(u64::MAX, |bit| bit - 1);
        let mut fields = 0;
        while fields < self.fields {
            if separators == 0 {
                if !ends_at_stop {
                    return None;
                }
                self.mask_ends[fields] = stop;
                fields += 1;
                break;
            }
            self.mask_ends[fields] = separators.trailing_zeros() as usize;
            fields += 1;
            separators &= separators - 1;
        }
        if ends_at_stop {
            return Some((stop + 1, State::RecordEnd, fields));
        }
        if fields == 0 {
            return Some((0, self.state, 0));
        }
        let last = self.mask_ends[fields - 1];
        // The record's end from the masks too, when it is in the window and its quotes before it
        // all open or close quoted fields (the field after `last` follows its delimiter).
        let after = u64::MAX.checked_shl(last as u32 + 1).unwrap_or(0);
        let (inside, literal) = quoted_stretches(quotes & after, delimiters, terminators, 0, 0);
        let ends = terminators & after & !inside;
        let end = ends.trailing_zeros();
        let before_end = 1u64.checked_shl(end).map_or(u64::MAX, |bit| bit - 1);
        Some(match ends != 0 && literal & before_end == 0 {
            true => (end as usize + 1, State::RecordEnd, fields),
            false => (last + 1, State::FieldStart, fields),
        })
    }

    /// One record, without its terminator.
    pub(crate) fn record(&mut self, bytes: &[u8], sink: &mut Sink) -> Result<(), ScanError> {
        self.field_ends.clear();
        let mut start = 0;
        while self.field_ends.len() < self.fields {
            if bytes.get(start) == Some(&self.quote) {
                return self.quoted_record(bytes, sink);
            }
            match memchr::memchr(self.delimiter, &bytes[start..]) {
                Some(at) => {
                    self.field_ends.push(start + at);
                    start += at + 1;
                }
                None => {
                    self.field_ends.push(bytes.len());
                    break;
                }
            }
        }
        let record = CsvRecord {
            data: bytes,
            ends: &self.field_ends,
            separated: true,
        };
        sink.csv(&record, self.record_start)
    }

    pub(crate) fn quoted_record(&mut self, bytes: &[u8], sink: &mut Sink) -> Result<(), ScanError> {
        use csv_core::ReadRecordResult;
        self.quoted.reset();
        // A blank line first: a reset reader strips a byte-order mark, which here is data.
        self.quoted
            .read_record(b"\n", &mut self.out, &mut self.out_ends);
        let (mut input, mut out_len, mut ends_len) = (bytes, 0, 0);
        loop {
            // An empty input is the end of the record.
            let (result, read, written, fields) = self.quoted.read_record(
                input,
                &mut self.out[out_len..],
                &mut self.out_ends[ends_len..],
            );
            input = &input[read..];
            out_len += written;
            ends_len += fields;
            match result {
                ReadRecordResult::OutputFull => {
                    let grown = self.out.len() * 2;
                    self.out.resize(grown, 0);
                }
                ReadRecordResult::OutputEndsFull => {
                    let grown = self.out_ends.len() * 2;
                    self.out_ends.resize(grown, 0);
                }
                ReadRecordResult::InputEmpty => {}
                ReadRecordResult::Record | ReadRecordResult::End => break,
            }
        }
        let record = CsvRecord {
            data: &self.out[..out_len],
            ends: &self.out_ends[..ends_len],
            separated: false,
        };
        sink.csv(&record, self.record_start)
    }
}

pub(crate) struct LinesExtractor {
    pub(crate) line: Vec<u8>,
    pub(crate) position: u64,
    pub(crate) record_start: u64,
    pub(crate) bounds: Bounds,
    /// A line was too long: the extractor reads no further.
    pub(crate) done: bool,
}

impl LinesExtractor {
    pub(crate) fn feed(&mut self, mut input: &[u8], sink: &mut Sink) -> Result<bool, ScanError> {
        while !self.done && self.record_start < self.bounds.end {
            let newline = memchr::memchr(b'\n', input);
            let reach = self.position + newline.map_or(input.len(), |at| at + 1) as u64;
            if self.bounds.too_long(self.record_start, reach) {
                sink.too_long(self.record_start);
                self.line = Vec::new();
                self.done = true;
                break;
            }
            let Some(newline) = newline else {
                self.line.extend_from_slice(input);
                self.position += input.len() as u64;
                return Ok(false);
            };
            let (line, rest) = input.split_at(newline + 1);
            let whole = line_with(&mut self.line, line);
            if !whole.trim_ascii().is_empty() {
                sink.raw(whole)?;
            }
            let record = std::mem::take(&mut self.line);
            let text = if record.is_empty() { line } else { &record };
            sink.json(text, self.record_start)?;
            self.position += line.len() as u64;
            self.record_start = self.position;
            input = rest;
        }
        Ok(true)
    }
}

/// `pending` plus `line`, without copying when nothing is pending.
pub(crate) fn line_with<'a>(pending: &'a mut Vec<u8>, line: &'a [u8]) -> &'a [u8] {
    if pending.is_empty() {
        line
    } else {
        pending.extend_from_slice(line);
        pending
    }
}
