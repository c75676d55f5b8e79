//! Exact record boundaries of byte ranges.
//!
//! A record belongs to the chunk in which it starts (S3 Select's ScanRange rule); a record starts
//! right after the terminator byte that ended the previous record, the first one at the data start.
//! From an arbitrary offset a CSV reader cannot tell whether it is inside a quoted field, so each
//! chunk runs the format's state machine from every start state at once and reports the resulting
//! mapping (start state -> end state) and, per start state, where its first record starts. Mappings
//! compose: chunk i's true start state is the composition of chunks 0..i-1 applied to the data
//! start. This is the data-parallel finite-state-machine technique of Mytkowicz, Musuvathi and
//! Schulte ("Data-Parallel Finite-State Machines", ASPLOS 2014), used for CSV by ParPaRaw
//! (Stehle and Jacobsen, VLDB 2020); workers speculate on their start state and are re-run when the
//! composition proves the guess wrong (Ge et al., "Speculative Distributed CSV Data Parsing for Big
//! Data Analytics", SIGMOD 2019).
//!
//! The CSV machine is csv-core's reader (the `csv` crate's) reduced to what decides record
//! boundaries: quotes escape by doubling, a quote inside an unquoted field is literal, `\r`, `\n`
//! and `\r\n` end records, and blank lines are skipped.

use serde::{Deserialize, Serialize};

/// State of the record machine after a byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum State {
    /// A terminator just ended a record: the next byte is the first of a new record.
    RecordEnd = 0,
    /// Between records, after blank-line terminators that started no record.
    BetweenRecords = 1,
    /// At the start of a field after a delimiter.
    FieldStart = 2,
    /// Inside an unquoted field.
    InField = 3,
    /// Inside a quoted field.
    InQuoted = 4,
    /// A quote inside a quoted field: closes it, or escapes a second quote.
    QuoteInQuoted = 5,
}

/// Number of [`State`]s.
pub const STATES: usize = 6;

impl State {
    /// Every state, in the order of their codes.
    pub const ALL: [State; STATES] = [
        State::RecordEnd,
        State::BetweenRecords,
        State::FieldStart,
        State::InField,
        State::InQuoted,
        State::QuoteInQuoted,
    ];

    /// One-letter code, for compact reports.
    pub fn code(self) -> char {
        b"RBSFQE"[self as usize] as char
    }

    /// The state whose [`State::code`] is `code`.
    pub fn from_code(code: char) -> Option<State> {
        State::ALL.into_iter().find(|state| state.code() == code)
    }
}

impl Serialize for State {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_char(self.code())
    }
}

impl<'de> Deserialize<'de> for State {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = char::deserialize(deserializer)?;
        State::from_code(code)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown record state {code:?}")))
    }
}

/// How records are delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Dialect {
    /// CSV with these delimiter and quote bytes.
    Csv {
        /// Byte between fields.
        delimiter: u8,
        /// Byte that opens and closes quoted fields.
        quote: u8,
    },
    /// One record per line: only `\n` ends one, nothing quotes.
    JsonLines,
}

/// A transition table: `next[byte][state]`.
pub struct Machine {
    next: Box<[[State; STATES]; 256]>,
    /// The quote byte of CSV: inside a quoted field only it changes the state.
    quote: Option<u8>,
}

impl Machine {
    /// The transition table of `dialect`.
    pub fn new(dialect: Dialect) -> Machine {
        let mut next = Box::new([[State::RecordEnd; STATES]; 256]);
        for byte in 0..=255u8 {
            for state in State::ALL {
                next[byte as usize][state as usize] = step(dialect, state, byte);
            }
        }
        let quote = match dialect {
            Dialect::Csv { quote, .. } => Some(quote),
            Dialect::JsonLines => None,
        };
        Machine { next, quote }
    }

    /// The state after `byte` read in `state`.
    #[inline]
    pub fn step(&self, state: State, byte: u8) -> State {
        self.next[byte as usize][state as usize]
    }

    /// How many bytes inside a quoted field leave the state as it is: up to the next quote.
    pub fn skip_quoted(&self, bytes: &[u8]) -> usize {
        match self.quote {
            Some(quote) => memchr::memchr(quote, bytes).unwrap_or(bytes.len()),
            None => 0,
        }
    }

    /// Outside quotes only terminators and the quote change the state beyond "after a delimiter"
    /// or "in a field": the offset of the next such byte.
    fn next_special(&self, bytes: &[u8]) -> Option<usize> {
        match self.quote {
            Some(quote) => memchr::memchr3(quote, b'\n', b'\r', bytes),
            None => memchr::memchr(b'\n', bytes),
        }
    }

    /// Runs `bytes` from `state`.
    pub fn run(&self, state: State, bytes: &[u8]) -> State {
        self.advance(state, bytes, false).0
    }

    /// Runs `bytes` from `state` until a terminator ends a record: the state there and the offset
    /// just after that byte, or the state at the end and `None`.
    pub fn run_to_record_end(&self, state: State, bytes: &[u8]) -> (State, Option<usize>) {
        self.advance(state, bytes, true)
    }

    /// The machine over `bytes`, jumping over the stretches where only the last byte can matter:
    /// inside quotes up to the next quote, outside quotes up to the next terminator or quote (from
    /// any unquoted state an ordinary byte or a delimiter leads to the same state whatever came
    /// before it). With `stop_at_record_end`, stops just after the first record's terminator.
    fn advance(
        &self,
        mut state: State,
        bytes: &[u8],
        stop_at_record_end: bool,
    ) -> (State, Option<usize>) {
        let mut at = 0;
        while at < bytes.len() {
            match state {
                State::InQuoted => at += self.skip_quoted(&bytes[at..]),
                State::QuoteInQuoted => {}
                _ => {
                    let plain = self.next_special(&bytes[at..]).unwrap_or(bytes.len() - at);
                    if plain > 0 {
                        state = self.step(State::InField, bytes[at + plain - 1]);
                        at += plain;
                    }
                }
            }
            if at == bytes.len() {
                break;
            }
            state = self.step(state, bytes[at]);
            at += 1;
            if stop_at_record_end && state == State::RecordEnd {
                return (state, Some(at));
            }
        }
        (state, None)
    }
}

fn step(dialect: Dialect, state: State, byte: u8) -> State {
    let (delimiter, quote) = match dialect {
        Dialect::JsonLines => {
            return if byte == b'\n' {
                State::RecordEnd
            } else {
                State::InField
            };
        }
        Dialect::Csv { delimiter, quote } => (delimiter, quote),
    };
    let terminator = byte == b'\n' || byte == b'\r';
    let after_field = |byte: u8| {
        if byte == delimiter {
            State::FieldStart
        } else if terminator {
            State::RecordEnd
        } else {
            State::InField
        }
    };
    match state {
        State::RecordEnd | State::BetweenRecords if terminator => State::BetweenRecords,
        State::RecordEnd | State::BetweenRecords | State::FieldStart if byte == quote => {
            State::InQuoted
        }
        State::RecordEnd | State::BetweenRecords | State::FieldStart | State::InField => {
            after_field(byte)
        }
        State::InQuoted if byte == quote => State::QuoteInQuoted,
        State::InQuoted => State::InQuoted,
        State::QuoteInQuoted if byte == quote => State::InQuoted,
        State::QuoteInQuoted => after_field(byte),
    }
}

/// For each of `bytes`, the positions in `window` where it occurs, as a bit mask.
#[inline]
pub fn byte_masks<const N: usize>(window: &[u8; 64], bytes: [u8; N]) -> [u64; N] {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{
            __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
        };
        let mut masks = [0u64; N];
        for (block, sixteen) in window.chunks_exact(16).enumerate() {
            // SAFETY: SSE2 is part of every x86_64 target, and the load reads the 16 bytes of
            // `sixteen` (without an alignment requirement).
            unsafe {
                let vector = _mm_loadu_si128(sixteen.as_ptr().cast::<__m128i>());
                for (mask, &byte) in masks.iter_mut().zip(&bytes) {
                    let equal =
                        _mm_movemask_epi8(_mm_cmpeq_epi8(vector, _mm_set1_epi8(byte as i8)));
                    *mask |= u64::from(equal as u16) << (16 * block);
                }
            }
        }
        masks
    }
    #[cfg(not(target_arch = "x86_64"))]
    byte_masks_scalar(window, bytes)
}

/// Where quoted fields run in a 64-byte window, from bit masks of its quotes and of the
/// delimiters and terminators: a bit is set from an opening quote up to its closing one (excluded),
/// by the parity of the quotes so far (a doubled quote leaves and re-enters). `inside` is all ones
/// when the window starts in a quoted field, and `may_open` holds the bits where a quote may open
/// one although no delimiter, terminator or quote comes before it (the window's first byte, after
/// such a byte). The parity is exact up to the first opening quote that neither starts a field nor
/// follows a quote: such a quote is literal (inside an unquoted field). Returns the stretches and
/// those quotes.
#[inline]
pub fn quoted_stretches(
    quotes: u64,
    delimiters: u64,
    terminators: u64,
    inside: u64,
    may_open: u64,
) -> (u64, u64) {
    let mut stretches = quotes;
    for shift in [1, 2, 4, 8, 16, 32] {
        stretches ^= stretches << shift;
    }
    let stretches = stretches ^ inside;
    let may_open = ((delimiters | terminators | quotes) << 1) | may_open;
    (stretches, quotes & stretches & !may_open)
}

#[cfg(any(test, not(target_arch = "x86_64")))]
fn byte_masks_scalar<const N: usize>(window: &[u8; 64], bytes: [u8; N]) -> [u64; N] {
    bytes.map(|byte| {
        window
            .iter()
            .enumerate()
            .fold(0, |mask, (at, &b)| mask | (u64::from(b == byte) << at))
    })
}

/// What a chunk's bytes do to every start state: where each ends, and where each would see the
/// chunk's first record start (an offset relative to the chunk, `None` when no record starts in it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSplit {
    /// Per start state (by its index), the state after the chunk's last byte.
    pub end: [State; STATES],
    /// Per start state, where the chunk's first record starts; `None` when none starts in it.
    pub first_record: [Option<u64>; STATES],
}

#[cfg(test)]
impl ChunkSplit {
    /// Runs `bytes` (the whole chunk) from every state at once.
    pub fn of(machine: &Machine, bytes: &[u8]) -> ChunkSplit {
        let mut scanner = SplitScanner::new(bytes.len() as u64);
        scanner.feed(machine, bytes);
        scanner.finish()
    }
}

/// Builds a [`ChunkSplit`] from a chunk that arrives in pieces. Lanes that meet are tracked once.
pub struct SplitScanner {
    /// Distinct current states, each with the set of start states (a bit mask) that reach it.
    lanes: Vec<(State, u8)>,
    first_record: [Option<u64>; STATES],
    offset: u64,
    length: u64,
}

impl SplitScanner {
    /// A scanner for a chunk of `length` bytes (a record starting at `length` is the next chunk's).
    pub fn new(length: u64) -> SplitScanner {
        let mut first_record = [None; STATES];
        first_record[State::RecordEnd as usize] = Some(0);
        SplitScanner {
            lanes: State::ALL
                .into_iter()
                .map(|state| (state, 1 << state as u8))
                .collect(),
            first_record,
            offset: 0,
            length,
        }
    }

    /// Runs the chunk's next bytes from every start state.
    pub fn feed(&mut self, machine: &Machine, bytes: &[u8]) {
        // Lanes run block by block in tight loops; lanes that met are merged between blocks.
        for block in bytes.chunks(16 << 10) {
            for lane in self.lanes.iter_mut() {
                let mut rest = block;
                let waiting = State::ALL.into_iter().any(|start| {
                    lane.1 & (1 << start as u8) != 0 && self.first_record[start as usize].is_none()
                });
                if waiting {
                    let (state, ended) = machine.run_to_record_end(lane.0, rest);
                    lane.0 = state;
                    if let Some(at) = ended {
                        let offset = self.offset + at as u64;
                        if offset < self.length {
                            for start in State::ALL {
                                if lane.1 & (1 << start as u8) != 0 {
                                    self.first_record[start as usize].get_or_insert(offset);
                                }
                            }
                        }
                        rest = &rest[at..];
                    } else {
                        rest = &[];
                    }
                }
                lane.0 = machine.run(lane.0, rest);
            }
            self.offset += block.len() as u64;
            if self.lanes.len() > 1 {
                merge_lanes(&mut self.lanes);
            }
        }
    }

    /// How many bytes of the chunk were fed (or skipped).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Whether every start state has met the others and found its first record: from here on the
    /// scanner follows one trajectory, the one a record reader of the chunk follows too.
    pub fn settled(&self) -> bool {
        self.lanes.len() == 1 && self.first_record.iter().all(Option::is_some)
    }

    /// Skips to `offset`, where a record reader on the settled trajectory just ended a record, so
    /// that the chunk's bytes are run once, not twice.
    pub fn skip_to_record_end(&mut self, offset: u64) {
        debug_assert!(self.settled() && offset >= self.offset);
        self.lanes[0].0 = State::RecordEnd;
        self.offset = offset;
    }

    /// Where a chunk starting in `state` has its first record, if known yet.
    pub fn first_record(&self, state: State) -> Option<u64> {
        self.first_record[state as usize]
    }

    /// The split of the bytes fed so far.
    pub fn finish(&self) -> ChunkSplit {
        let mut end = State::ALL;
        for &(state, starts) in &self.lanes {
            for start in State::ALL {
                if starts & (1 << start as u8) != 0 {
                    end[start as usize] = state;
                }
            }
        }
        ChunkSplit {
            end,
            first_record: self.first_record,
        }
    }
}

fn merge_lanes(lanes: &mut Vec<(State, u8)>) {
    let mut i = 0;
    while i < lanes.len() {
        let mut j = i + 1;
        while j < lanes.len() {
            if lanes[j].0 == lanes[i].0 {
                lanes[i].1 |= lanes[j].1;
                lanes.swap_remove(j);
            } else {
                j += 1;
            }
        }
        i += 1;
    }
}

/// The state a chunk should assume when it has not been told its true start state: the machine
/// run over the one byte before the chunk from "inside an unquoted field", which is right unless a
/// quoted field or a blank line spans the boundary. The controller checks every guess.
pub fn guess_start(machine: &Machine, byte_before: Option<u8>) -> State {
    match byte_before {
        None => State::RecordEnd,
        Some(byte) => machine.step(State::InField, byte),
    }
}

/// True start states of consecutive chunks, from the data start's state and each chunk's end
/// mapping; one more entry than `ends` (the state at the end of the last chunk).
pub fn start_states(initial: State, ends: impl IntoIterator<Item = [State; STATES]>) -> Vec<State> {
    let mut states = vec![initial];
    let mut state = initial;
    for end in ends {
        state = end[state as usize];
        states.push(state);
    }
    states
}

/// Whether a file ending in `state` is complete: not inside a quoted field.
pub fn is_complete_end(state: State) -> bool {
    state != State::InQuoted
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CSV: Dialect = Dialect::Csv {
        delimiter: b',',
        quote: b'"',
    };

    /// Record starts as csv-core sees them: the offset where each record's read begins. A blank
    /// line primes the reader so that it does not strip a byte-order mark (the planner does).
    fn csv_crate_record_starts(data: &[u8]) -> Vec<u64> {
        let mut reader = csv_core::Reader::new();
        let (mut out, mut ends) = (vec![0u8; data.len() + 1], vec![0usize; data.len() + 1]);
        reader.read_record(b"\n", &mut out, &mut ends);
        let (mut consumed, mut starts) = (0usize, Vec::new());
        loop {
            let start = consumed;
            let (result, read, _, _) = reader.read_record(&data[consumed..], &mut out, &mut ends);
            consumed += read;
            match result {
                csv_core::ReadRecordResult::Record => starts.push(start as u64),
                csv_core::ReadRecordResult::End => return starts,
                csv_core::ReadRecordResult::InputEmpty => {
                    let (result, _, _, _) = reader.read_record(&[], &mut out, &mut ends);
                    if result == csv_core::ReadRecordResult::Record {
                        starts.push(start as u64);
                    }
                    return starts;
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// Record starts by the machine run sequentially: a record point followed by a record's byte.
    fn machine_record_starts(dialect: Dialect, data: &[u8]) -> Vec<u64> {
        let machine = Machine::new(dialect);
        let (mut state, mut point, mut starts) = (State::RecordEnd, Some(0u64), Vec::new());
        for (offset, &byte) in data.iter().enumerate() {
            state = machine.step(state, byte);
            match state {
                State::RecordEnd => point = Some(offset as u64 + 1),
                State::BetweenRecords => {}
                _ => starts.extend(point.take()),
            }
        }
        starts
    }

    #[test]
    fn csv_states_follow_csv_core() {
        let cases: &[(&[u8], &[u64])] = &[
            (b"a,b\nc,d\n", &[0, 4]),
            (b"a,b\r\nc,d", &[0, 4]),
            (b"a\n\n\nb\n", &[0, 2]),
            (b"\"x\ny\",1\nz,2\n", &[0, 8]),
            (b"5'10\",a\nb\n", &[0, 8]),
            (b"\"a\"\"\n\",b\nc", &[0, 9]),
            (b",\n,\n", &[0, 2]),
            (b"\"ab\"c,d\ne\n", &[0, 8]),
        ];
        for (data, want) in cases {
            assert_eq!(csv_crate_record_starts(data), *want, "csv-core {data:?}");
            assert_eq!(machine_record_starts(CSV, data), *want, "machine {data:?}");
        }
    }

    #[test]
    fn a_chunk_reports_every_start_state() {
        let machine = Machine::new(CSV);
        let split = ChunkSplit::of(&machine, b"a\nb");
        assert_eq!(split.end[State::InField as usize], State::InField);
        assert_eq!(split.end[State::InQuoted as usize], State::InQuoted);
        assert_eq!(split.first_record[State::InField as usize], Some(2));
        assert_eq!(split.first_record[State::InQuoted as usize], None);
        assert_eq!(split.first_record[State::RecordEnd as usize], Some(0));
        // A terminator at the very end starts the next chunk's record, not this one's.
        let split = ChunkSplit::of(&machine, b"ab\n");
        assert_eq!(split.first_record[State::InField as usize], None);
        assert_eq!(split.end[State::InField as usize], State::RecordEnd);
    }

    #[test]
    fn guesses_from_the_byte_before() {
        let machine = Machine::new(CSV);
        assert_eq!(guess_start(&machine, None), State::RecordEnd);
        assert_eq!(guess_start(&machine, Some(b'\n')), State::RecordEnd);
        assert_eq!(guess_start(&machine, Some(b',')), State::FieldStart);
        assert_eq!(guess_start(&machine, Some(b'x')), State::InField);
        let jsonl = Machine::new(Dialect::JsonLines);
        assert_eq!(guess_start(&jsonl, Some(b'\n')), State::RecordEnd);
        assert_eq!(guess_start(&jsonl, Some(b'}')), State::InField);
    }

    fn tricky_csv() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(
            prop::sample::select(vec![
                &b"a"[..],
                b"1",
                b",",
                b"\"",
                b"\"\"",
                b"\n",
                b"\r\n",
                b"\r",
                b"'",
                b"\xef\xbb\xbf",
            ]),
            0..60,
        )
        .prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #[test]
        fn byte_masks_mark_every_occurrence(window in prop::array::uniform32(0u8..8), more in prop::array::uniform32(0u8..8)) {
            let mut bytes = [0u8; 64];
            bytes[..32].copy_from_slice(&window);
            bytes[32..].copy_from_slice(&more);
            // Small values so that each needle occurs; 7 maps to a byte with the high bit set.
            let bytes = bytes.map(|b| if b == 7 { 0xE9 } else { b });
            let needles = [1, 3, 0xE9, 9];
            prop_assert_eq!(byte_masks(&bytes, needles), byte_masks_scalar(&bytes, needles));
        }

        #[test]
        fn jumps_agree_with_single_steps(data in tricky_csv(), start in 0..STATES, json in any::<bool>()) {
            let machine = Machine::new(if json { Dialect::JsonLines } else { CSV });
            let start = State::ALL[start];
            let mut state = start;
            let mut first_end = None;
            for (offset, &byte) in data.iter().enumerate() {
                state = machine.step(state, byte);
                if state == State::RecordEnd && first_end.is_none() {
                    first_end = Some(offset + 1);
                }
            }
            prop_assert_eq!(machine.run(start, &data), state);
            let want = match first_end {
                Some(at) => (State::RecordEnd, Some(at)),
                None => (state, None),
            };
            prop_assert_eq!(machine.run_to_record_end(start, &data), want);
        }

        #[test]
        fn the_machine_finds_the_records_csv_core_finds(data in tricky_csv()) {
            prop_assert_eq!(machine_record_starts(CSV, &data), csv_crate_record_starts(&data));
        }

        #[test]
        fn composed_chunks_agree_with_a_sequential_run(data in tricky_csv(), size in 1usize..9) {
            let machine = Machine::new(CSV);
            let splits: Vec<ChunkSplit> = data.chunks(size).map(|c| ChunkSplit::of(&machine, c)).collect();
            let states = start_states(State::RecordEnd, splits.iter().map(|s| s.end));
            let mut sequential = State::RecordEnd;
            let mut firsts = Vec::new();
            for (index, chunk) in data.chunks(size).enumerate() {
                prop_assert_eq!(states[index], sequential);
                let first = splits[index].first_record[sequential as usize];
                if let Some(first) = first {
                    firsts.push((index * size) as u64 + first);
                }
                sequential = machine.run(sequential, chunk);
            }
            prop_assert_eq!(*states.last().unwrap(), sequential);
            // Every chunk's first record start is a record start of the sequential run.
            let candidates = record_points(&machine, &data);
            for first in firsts {
                prop_assert!(candidates.contains(&first), "{} not in {:?}", first, candidates);
            }
        }
    }

    fn record_points(machine: &Machine, data: &[u8]) -> Vec<u64> {
        let mut state = State::RecordEnd;
        let mut points = vec![0];
        for (offset, &byte) in data.iter().enumerate() {
            state = machine.step(state, byte);
            if state == State::RecordEnd {
                points.push(offset as u64 + 1);
            }
        }
        points
    }
}
