//! A Parquet footer checked before it is decoded: the footer is the object's own bytes, and the
//! decoder (arrow-rs) allocates lists by their declared sizes and builds the schema tree
//! recursively, so a hostile footer could exhaust memory or the stack of whoever plans the scan
//! (the operator). One pass over the Thrift compact encoding, with an explicit stack and no
//! recursion, measures what the decoder would build: how deep the schema nests, how many row
//! groups, columns and column chunks it declares, and whether offsets and sizes are negative.
//!
//! The same pass drops optional fields whose wire type is not the one the format gives them, as
//! every Thrift decoder but arrow-rs's does (a field of an unexpected type is skipped): some
//! writers (Dremio's parquet-mr fork) wrote a list where the format now has
//! `ColumnMetaData.bloom_filter_length`, which arrow-rs then misreads; the same writer recorded
//! a dictionary page at offset 0, which readers take for none (parquet-testing's
//! `dict-page-offset-zero.parquet`).

use std::borrow::Cow;

/// Deepest schema read: nested groups within groups. Real schemas nest a few levels; the
/// decoder recurses once per level.
pub const MAX_SCHEMA_DEPTH: usize = 64;

/// Most column chunks (row groups times columns) a footer may declare: the decoder keeps a few
/// hundred bytes of metadata for each.
pub const MAX_COLUMN_CHUNKS: usize = 200_000;

/// Deepest nesting of Thrift structures and lists: the format's own metadata nests fewer than
/// ten; arrow-rs skips unknown fields to a depth of 64.
const MAX_THRIFT_DEPTH: usize = 64;

/// What a footer declares, measured before it is decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Declared {
    /// How deep groups nest in the schema (the root not counted).
    pub schema_depth: usize,
    /// Leaf columns of the schema.
    pub columns: usize,
    /// Row groups the footer lists.
    pub row_groups: usize,
    /// Column chunks of all the row groups together.
    pub column_chunks: usize,
}

/// Compact-protocol wire types.
const BOOL_TRUE: u8 = 1;
const BOOL_FALSE: u8 = 2;
const BYTE: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;
/// Not a wire type: a boolean list element, which takes a byte (a boolean field does not).
const BOOL_ELEMENT: u8 = 0;

/// The structures of the format whose fields are checked and counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    FileMetaData,
    SchemaElement,
    RowGroup,
    ColumnChunk,
    ColumnMetaData,
    Other,
}

impl Kind {
    /// The wire type the format gives field `id`, and the kind of structure it holds (for a
    /// struct, or the elements of a list). `None` for a field the format does not define here.
    fn field(self, id: i16) -> Option<(u8, Kind)> {
        use Kind::*;
        let o = Other;
        Some(match (self, id) {
            (FileMetaData, 1) => (I32, o),
            (FileMetaData, 2) => (LIST, SchemaElement),
            (FileMetaData, 3) => (I64, o),
            (FileMetaData, 4) => (LIST, RowGroup),
            (FileMetaData, 5 | 7) => (LIST, o),
            (FileMetaData, 6 | 9) => (BINARY, o),
            (FileMetaData, 8) => (STRUCT, o),
            (SchemaElement, 1 | 2 | 3 | 5 | 6 | 7 | 8 | 9) => (I32, o),
            (SchemaElement, 4) => (BINARY, o),
            (SchemaElement, 10) => (STRUCT, o),
            (RowGroup, 1) => (LIST, ColumnChunk),
            (RowGroup, 2 | 3 | 5 | 6) => (I64, o),
            (RowGroup, 4) => (LIST, o),
            (RowGroup, 7) => (I16, o),
            (ColumnChunk, 1 | 9) => (BINARY, o),
            (ColumnChunk, 2 | 4 | 6) => (I64, o),
            (ColumnChunk, 3) => (STRUCT, ColumnMetaData),
            (ColumnChunk, 5 | 7) => (I32, o),
            (ColumnChunk, 8) => (STRUCT, o),
            (ColumnMetaData, 1 | 4 | 15) => (I32, o),
            (ColumnMetaData, 2 | 3 | 8 | 13) => (LIST, o),
            (ColumnMetaData, 5 | 6 | 7 | 9 | 10 | 11 | 14) => (I64, o),
            (ColumnMetaData, 12 | 16 | 17) => (STRUCT, o),
            _ => return None,
        })
    }

    /// Whether field `id` must be there (a wrong type there is left to the decoder to refuse).
    fn required(self, id: i16) -> bool {
        use Kind::*;
        matches!(
            (self, id),
            (FileMetaData, 1..=4)
                | (SchemaElement, 4)
                | (RowGroup, 1..=3)
                | (ColumnChunk, 2)
                | (ColumnMetaData, 1..=7 | 9)
        )
    }

    /// Fields whose value is a byte offset or a size: a negative one is a broken footer (the
    /// decoder would accept it, and a later assertion fail).
    fn is_offset(self, id: i16) -> bool {
        use Kind::*;
        matches!(
            (self, id),
            (ColumnMetaData, 6 | 7 | 9 | 10 | 11) | (ColumnChunk, 2) | (RowGroup, 2 | 3)
        )
    }
}

/// A structure or list being walked.
enum Frame {
    Struct {
        kind: Kind,
        last_id: i16,
        /// A field of this structure was dropped: the next one's header is written with its id
        /// in full (a compact header is a delta from the field before it).
        after_drop: bool,
    },
    List {
        left: usize,
        element: u8,
        kind: Kind,
    },
}

/// An edit of the footer's bytes: `range` replaced by `with`.
struct Edit {
    range: std::ops::Range<usize>,
    with: Vec<u8>,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let byte = *self
            .bytes
            .get(self.at)
            .ok_or("the footer ends inside a value")?;
        self.at += 1;
        Ok(byte)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..70).step_by(7) {
            let byte = self.byte()?;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("a number in the footer is longer than 10 bytes".into())
    }

    fn zigzag(&mut self) -> Result<i64, String> {
        let n = self.varint()?;
        Ok((n >> 1) as i64 ^ -((n & 1) as i64))
    }

    fn skip(&mut self, length: usize) -> Result<(), String> {
        if length > self.bytes.len() - self.at {
            return Err("a value runs past the footer's end".into());
        }
        self.at += length;
        Ok(())
    }

    /// A list's header: its length and element type. Each element takes a byte at least, so a
    /// length past the bytes left is refused before anything is counted by it.
    fn list_header(&mut self) -> Result<(usize, u8), String> {
        let header = self.byte()?;
        let length = match header >> 4 {
            15 => self.varint()?,
            short => u64::from(short),
        };
        let left = (self.bytes.len() - self.at) as u64;
        if length > left {
            return Err(format!("a list declares {length} elements in {left} bytes"));
        }
        Ok((length as usize, element_type(header & 0x0f)))
    }
}

/// What is counted along the way.
#[derive(Default)]
struct Counts {
    declared: Declared,
    /// Children still to come at each open level of the schema tree.
    open_groups: Vec<u64>,
    /// The current SchemaElement's `num_children`.
    children: Option<i64>,
    schema_elements: usize,
}

impl Counts {
    /// One SchemaElement ended: place it in the tree (the first is the root).
    fn schema_element(&mut self) -> Result<(), String> {
        let children = self.children.take().unwrap_or(0);
        if children < 0 {
            return Err(format!("a schema element declares {children} children"));
        }
        self.schema_elements += 1;
        if self.schema_elements > 1 {
            // It is a child of the innermost open group.
            match self.open_groups.last_mut() {
                Some(left) if *left > 0 => *left -= 1,
                _ => return Err("the schema has more elements than its groups hold".into()),
            }
            if children == 0 {
                self.declared.columns += 1;
            }
        }
        if children > 0 {
            self.open_groups.push(children as u64);
            self.declared.schema_depth = self.declared.schema_depth.max(self.open_groups.len());
            if self.declared.schema_depth > MAX_SCHEMA_DEPTH + 1 {
                return Err(format!(
                    "the schema nests more than {MAX_SCHEMA_DEPTH} levels deep"
                ));
            }
        }
        while self.open_groups.last() == Some(&0) {
            self.open_groups.pop();
        }
        Ok(())
    }
}

/// Checks a footer (the Thrift `FileMetaData`) before it is decoded; returns what it declares
/// and the footer to decode: itself, or a copy without the optional fields of an unexpected type.
pub fn vet(footer: &[u8]) -> Result<(Declared, Cow<'_, [u8]>), String> {
    let mut reader = Reader {
        bytes: footer,
        at: 0,
    };
    let mut stack = vec![Frame::Struct {
        kind: Kind::FileMetaData,
        last_id: 0,
        after_drop: false,
    }];
    let mut counts = Counts::default();
    let mut edits: Vec<Edit> = Vec::new();
    loop {
        if stack.len() > MAX_THRIFT_DEPTH {
            return Err(format!(
                "the footer nests more than {MAX_THRIFT_DEPTH} structures deep"
            ));
        }
        let Some(frame) = stack.last_mut() else {
            break;
        };
        match frame {
            Frame::List { left: 0, .. } => {
                stack.pop();
            }
            Frame::List {
                left,
                element,
                kind,
            } => {
                *left -= 1;
                let (element, kind) = (*element, *kind);
                if kind == Kind::ColumnChunk {
                    counts.declared.column_chunks += 1;
                    if counts.declared.column_chunks > MAX_COLUMN_CHUNKS {
                        return Err(format!(
                            "the footer declares more than {MAX_COLUMN_CHUNKS} column chunks"
                        ));
                    }
                }
                if let Some(frame) = value(&mut reader, element, kind)? {
                    stack.push(frame);
                }
            }
            Frame::Struct {
                kind,
                last_id,
                after_drop,
            } => {
                let start = reader.at;
                let header = reader.byte()?;
                let wire = header & 0x0f;
                if header == 0 {
                    let ended = *kind;
                    stack.pop();
                    if ended == Kind::SchemaElement {
                        counts.schema_element()?;
                    }
                    continue;
                }
                let id = match header >> 4 {
                    0 => i16::try_from(reader.zigzag()?)
                        .map_err(|_| "a field id out of range".to_string())?,
                    delta => last_id.saturating_add(i16::from(delta)),
                };
                let header_end = reader.at;
                let (kind, rewrite_header) = (*kind, *after_drop);
                *last_id = id;
                *after_drop = false;
                let expected = kind.field(id);
                let wire_kind = match wire {
                    BOOL_TRUE | BOOL_FALSE => BOOL_TRUE,
                    other => other,
                };
                if let Some((want, _)) = expected
                    && want != wire_kind
                    && !kind.required(id)
                {
                    // Skipped, as Thrift skips a field of an unexpected type.
                    skip_value(&mut reader, wire)?;
                    edits.push(Edit {
                        range: start..reader.at,
                        with: Vec::new(),
                    });
                    if let Some(Frame::Struct { after_drop, .. }) = stack.last_mut() {
                        *after_drop = true;
                    }
                    continue;
                }
                if rewrite_header {
                    edits.push(Edit {
                        range: start..header_end,
                        with: long_header(wire, id),
                    });
                }
                let inner = expected.map_or(Kind::Other, |(_, inner)| inner);
                match (kind, id, wire) {
                    (Kind::SchemaElement, 5, I32) => {
                        counts.children = Some(reader.zigzag()?);
                        continue;
                    }
                    (kind, id, I32 | I64) if kind.is_offset(id) => {
                        let value = reader.zigzag()?;
                        if value < 0 {
                            return Err(format!("a negative offset or size ({value})"));
                        }
                        // A dictionary page at offset 0 (where the magic is) means none was
                        // recorded, as parquet-mr and Arrow C++ read it: the pages say.
                        if (kind, id, value) == (Kind::ColumnMetaData, 11, 0) {
                            // Its own header rewrite, if any, goes with it.
                            if edits.last().is_some_and(|e| e.range.start == start) {
                                edits.pop();
                            }
                            edits.push(Edit {
                                range: start..reader.at,
                                with: Vec::new(),
                            });
                            if let Some(Frame::Struct { after_drop, .. }) = stack.last_mut() {
                                *after_drop = true;
                            }
                        }
                        continue;
                    }
                    (Kind::FileMetaData, 4, LIST) => {
                        let (length, element) = reader.list_header()?;
                        counts.declared.row_groups = length;
                        stack.push(Frame::List {
                            left: length,
                            element,
                            kind: inner,
                        });
                        continue;
                    }
                    _ => {}
                }
                if let Some(frame) = value(&mut reader, wire, inner)? {
                    stack.push(frame);
                }
            }
        }
    }
    if !counts.open_groups.is_empty() {
        return Err("the schema's groups declare more children than it has".into());
    }
    let mut declared = counts.declared;
    // The root is a group, not a level of nesting.
    declared.schema_depth = declared.schema_depth.saturating_sub(1);
    if edits.is_empty() {
        return Ok((declared, Cow::Borrowed(footer)));
    }
    let mut cleaned = Vec::with_capacity(footer.len());
    let mut at = 0;
    for edit in edits {
        cleaned.extend_from_slice(&footer[at..edit.range.start]);
        cleaned.extend_from_slice(&edit.with);
        at = edit.range.end;
    }
    cleaned.extend_from_slice(&footer[at..]);
    Ok((declared, Cow::Owned(cleaned)))
}

/// Reads one value of wire type `wire`: a scalar whole, or the frame to walk a structure or
/// list with.
fn value(reader: &mut Reader, wire: u8, kind: Kind) -> Result<Option<Frame>, String> {
    match wire {
        STRUCT => Ok(Some(Frame::Struct {
            kind,
            last_id: 0,
            after_drop: false,
        })),
        LIST | SET => {
            let (left, element) = reader.list_header()?;
            Ok(Some(Frame::List {
                left,
                element,
                kind,
            }))
        }
        _ => skip_value(reader, wire).map(|()| None),
    }
}

/// What is left to skip of a value.
enum Skip {
    /// `left` values of wire type `wire`.
    Values { wire: u8, left: usize },
    /// `left` key-value pairs of a map.
    Pairs { key: u8, value: u8, left: usize },
    /// The fields of a structure, up to its stop byte.
    Fields,
}

/// Skips a value of wire type `wire`, walking structures, lists and maps with a stack of its own
/// (bounded like the footer's), never by recursion.
fn skip_value(reader: &mut Reader, wire: u8) -> Result<(), String> {
    let mut stack = vec![Skip::Values { wire, left: 1 }];
    loop {
        if stack.len() > MAX_THRIFT_DEPTH {
            return Err(format!(
                "the footer nests more than {MAX_THRIFT_DEPTH} structures deep"
            ));
        }
        let Some(top) = stack.last_mut() else {
            break;
        };
        let wire = match top {
            Skip::Values { left: 0, .. } | Skip::Pairs { left: 0, .. } => {
                stack.pop();
                continue;
            }
            Skip::Values { wire, left } => {
                *left -= 1;
                *wire
            }
            Skip::Pairs { key, value, left } => {
                *left -= 1;
                let (key, value) = (*key, *value);
                // The key is read first: it is on top.
                stack.push(Skip::Values {
                    wire: value,
                    left: 1,
                });
                stack.push(Skip::Values { wire: key, left: 1 });
                continue;
            }
            Skip::Fields => {
                let header = reader.byte()?;
                if header == 0 {
                    stack.pop();
                    continue;
                }
                if header >> 4 == 0 {
                    reader.zigzag()?;
                }
                stack.push(Skip::Values {
                    wire: header & 0x0f,
                    left: 1,
                });
                continue;
            }
        };
        match wire {
            // A boolean field holds its value in its header.
            BOOL_TRUE | BOOL_FALSE => {}
            BOOL_ELEMENT | BYTE => reader.skip(1)?,
            I16 | I32 | I64 => {
                reader.varint()?;
            }
            DOUBLE => reader.skip(8)?,
            BINARY => {
                let length = reader.varint()?;
                reader.skip(usize::try_from(length).unwrap_or(usize::MAX))?;
            }
            LIST | SET => {
                let (left, wire) = reader.list_header()?;
                stack.push(Skip::Values { wire, left });
            }
            MAP => {
                let length = reader.varint()?;
                if length > 0 {
                    let types = reader.byte()?;
                    let left = (reader.bytes.len() - reader.at) as u64;
                    if length > left {
                        return Err(format!("a map declares {length} entries in {left} bytes"));
                    }
                    stack.push(Skip::Pairs {
                        key: element_type(types >> 4),
                        value: element_type(types & 0x0f),
                        left: length as usize,
                    });
                }
            }
            STRUCT => stack.push(Skip::Fields),
            other => return Err(format!("an unknown Thrift type {other} in the footer")),
        }
    }
    Ok(())
}

/// The wire type of a list, set or map element: a boolean element takes a byte of its own.
fn element_type(wire: u8) -> u8 {
    match wire {
        BOOL_TRUE | BOOL_FALSE => BOOL_ELEMENT,
        other => other,
    }
}

/// A field header with its id in full: a zero delta, the type, then the id.
fn long_header(wire: u8, id: i16) -> Vec<u8> {
    let mut header = vec![wire];
    let mut n = ((i64::from(id) << 1) ^ (i64::from(id) >> 63)) as u64;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            header.push(byte);
            return header;
        }
        header.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::file::metadata::ParquetMetaDataReader;

    /// Thrift compact encoding, enough to write footers.
    struct Thrift(Vec<u8>);

    impl Thrift {
        fn varint(&mut self, mut n: u64) -> &mut Self {
            loop {
                let byte = (n & 0x7f) as u8;
                n >>= 7;
                if n == 0 {
                    self.0.push(byte);
                    return self;
                }
                self.0.push(byte | 0x80);
            }
        }
        fn int(&mut self, n: i64) -> &mut Self {
            self.varint(((n << 1) ^ (n >> 63)) as u64)
        }
        /// A field header with a delta of one from the previous field (`field` ids in order).
        fn field(&mut self, delta: u8, wire: u8) -> &mut Self {
            self.0.push(delta << 4 | wire);
            self
        }
        fn text(&mut self, text: &str) -> &mut Self {
            self.varint(text.len() as u64);
            self.0.extend_from_slice(text.as_bytes());
            self
        }
        fn list(&mut self, length: usize, element: u8) -> &mut Self {
            if length < 15 {
                self.0.push((length as u8) << 4 | element);
            } else {
                self.0.push(0xf0 | element);
                self.varint(length as u64);
            }
            self
        }
        fn stop(&mut self) -> &mut Self {
            self.0.push(0);
            self
        }
    }

    /// A footer with `depth` nested one-child groups over an INT32 leaf, and `row_groups` row
    /// groups of one column chunk (of `offset`).
    fn footer(depth: usize, row_groups: usize, offset: i64) -> Vec<u8> {
        let mut t = Thrift(Vec::new());
        t.field(1, I32)
            .int(1)
            .field(1, LIST)
            .list(depth + 2, STRUCT);
        // The root: name, num_children.
        t.field(4, BINARY)
            .text("schema")
            .field(1, I32)
            .int(1)
            .stop();
        for _ in 0..depth {
            // repetition_type OPTIONAL, name, num_children 1.
            t.field(3, I32).int(1).field(1, BINARY).text("a");
            t.field(1, I32).int(1).stop();
        }
        // type INT32, repetition REQUIRED, name.
        t.field(1, I32)
            .int(1)
            .field(2, I32)
            .int(0)
            .field(1, BINARY)
            .text("a")
            .stop();
        t.field(1, I64).int(row_groups as i64);
        t.field(1, LIST).list(row_groups, STRUCT);
        for _ in 0..row_groups {
            t.field(1, LIST).list(1, STRUCT);
            // ColumnChunk: file_offset, meta_data.
            t.field(2, I64).int(offset).field(1, STRUCT);
            // ColumnMetaData: type, encodings, path, codec, num_values, sizes, data page.
            t.field(1, I32).int(1).field(1, LIST).list(1, I32).int(0);
            t.field(1, LIST).list(1, BINARY).text("a");
            t.field(1, I32).int(0).field(1, I64).int(1);
            t.field(1, I64).int(4).field(1, I64).int(4);
            t.field(2, I64).int(offset).stop();
            t.stop();
            // total_byte_size, num_rows.
            t.field(1, I64).int(4).field(1, I64).int(1).stop();
        }
        t.stop();
        t.0
    }

    /// Runs `work` on a thread with the 2 MiB stack of a tokio worker.
    fn on_small_stack<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(work)
            .unwrap()
            .join()
            .unwrap()
    }

    #[test]
    fn what_a_footer_declares_is_what_it_decodes_to() {
        let bytes = footer(3, 5, 4);
        let (declared, vetted) = vet(&bytes).unwrap();
        assert!(matches!(vetted, Cow::Borrowed(_)));
        assert_eq!(
            declared,
            Declared {
                schema_depth: 3,
                columns: 1,
                row_groups: 5,
                column_chunks: 5,
            }
        );
        let decoded = ParquetMetaDataReader::decode_metadata(&bytes).unwrap();
        assert_eq!(decoded.num_row_groups(), 5);
        assert_eq!(decoded.file_metadata().schema_descr().num_columns(), 1);
    }

    #[test]
    fn the_conformance_files_footers_pass_unchanged_and_count_right() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/parquet-testing/data");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let length = u32::from_le_bytes(bytes[bytes.len() - 8..][..4].try_into().unwrap());
            let footer = &bytes[bytes.len() - 8 - length as usize..bytes.len() - 8];
            let Ok(decoded) = ParquetMetaDataReader::decode_metadata(footer) else {
                continue;
            };
            let (declared, vetted) = vet(footer).unwrap();
            assert!(matches!(vetted, Cow::Borrowed(_)));
            assert_eq!(declared.row_groups, decoded.num_row_groups());
            let schema = decoded.file_metadata().schema_descr();
            assert_eq!(declared.columns, schema.num_columns());
            let chunks: usize = decoded.row_groups().iter().map(|g| g.num_columns()).sum();
            assert_eq!(declared.column_chunks, chunks);
            checked += 1;
        }
        assert!(checked > 50, "{checked}");
    }

    #[test]
    fn fields_of_an_unexpected_type_and_a_dictionary_at_zero_are_dropped() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/parquet-testing/data/dict-page-offset-zero.parquet"
        );
        let bytes = std::fs::read(path).unwrap();
        let length = u32::from_le_bytes(bytes[bytes.len() - 8..][..4].try_into().unwrap());
        let footer = &bytes[bytes.len() - 8 - length as usize..bytes.len() - 8];
        assert!(ParquetMetaDataReader::decode_metadata(footer).is_err());
        let (_, vetted) = vet(footer).unwrap();
        let decoded = ParquetMetaDataReader::decode_metadata(&vetted).unwrap();
        let column = decoded.row_group(0).column(0);
        assert_eq!(column.dictionary_page_offset(), None);
        assert_eq!(column.data_page_offset(), 4);
        assert_eq!(decoded.row_group(0).num_rows(), 39);
    }

    #[test]
    fn deep_schemas_are_refused_before_decoding_on_a_small_stack() {
        // At the bound: vetted and decoded on a worker's stack.
        let at_bound = footer(MAX_SCHEMA_DEPTH, 1, 4);
        let decoded = on_small_stack(move || {
            let (declared, vetted) = vet(&at_bound).map_err(|e| e.to_string())?;
            assert_eq!(declared.schema_depth, MAX_SCHEMA_DEPTH);
            let decoded = ParquetMetaDataReader::decode_metadata(&vetted);
            let decoded = std::sync::Arc::new(decoded.map_err(|e| e.to_string())?);
            // The Arrow view of it is built recursively too.
            let arrow = super::super::arrow_metadata(decoded.clone(), "deep");
            arrow.map_err(|e| e.to_string())?;
            Ok::<_, String>(decoded.num_row_groups())
        });
        assert_eq!(decoded, Ok(1));
        // Past it, by one level and by 100,000: refused, without recursion.
        for depth in [MAX_SCHEMA_DEPTH + 1, 100_000] {
            let deep = footer(depth, 1, 4);
            let refused = on_small_stack(move || vet(&deep).map(|(d, _)| d));
            assert!(
                refused
                    .as_ref()
                    .is_err_and(|e| e.contains("nests more than 64")),
                "{depth}: {refused:?}"
            );
        }
    }

    #[test]
    fn counts_offsets_and_list_sizes_are_checked() {
        let (declared, _) = vet(&footer(1, 30_000, 4)).unwrap();
        assert_eq!(declared.row_groups, 30_000);
        let too_many = footer(0, MAX_COLUMN_CHUNKS + 1, 4);
        assert!(vet(&too_many).unwrap_err().contains("column chunks"));
        assert!(vet(&footer(1, 2, -7)).unwrap_err().contains("negative"));
        // A list that declares more elements than bytes are left.
        let mut lying = Thrift(Vec::new());
        lying
            .field(1, I32)
            .int(1)
            .field(1, LIST)
            .list(1 << 30, STRUCT);
        assert!(vet(&lying.0).unwrap_err().contains("declares"));
        // Cut anywhere: an error, never a panic.
        let whole = footer(2, 3, 4);
        for end in 0..whole.len() {
            assert!(vet(&whole[..end]).is_err(), "{end}");
        }
    }
}
