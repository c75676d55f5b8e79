//! Whole-object compression of text objects: which one, and its streaming decoder.

use std::io::BufRead;

use serde::{Deserialize, Serialize};

/// Buffer between a decoder and the record splitter.
const DECODED_BUFFER: usize = 256 << 10;

/// Largest zstd window a decoder accepts, as a power of two (128 MiB, zstd's own default): a
/// frame asking for more (`zstd --long=31`) fails as invalid instead of growing memory.
const ZSTD_MAX_WINDOW_LOG: u32 = 27;

/// How an object's bytes are compressed as a whole (Parquet compresses inside its pages).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Plain bytes: split into byte ranges.
    #[default]
    None,
    /// gzip (RFC 1952), one or more members: read as one stream, in one chunk.
    Gzip,
    /// Zstandard, one or more frames: read as one stream, in one chunk.
    Zstd,
    /// bzip2, one or more streams: read as one stream, in one chunk.
    Bzip2,
}

impl Compression {
    const ALL: [Compression; 4] = [Self::None, Self::Gzip, Self::Zstd, Self::Bzip2];

    /// Whether the bytes are plain.
    pub fn is_none(&self) -> bool {
        *self == Compression::None
    }

    /// Whether an object so compressed can be split into byte ranges (only plain ones can).
    pub fn splittable(self) -> bool {
        self.is_none()
    }

    /// The compression's name, as status and messages give it.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
        }
    }

    /// The compression of `name` ([`Compression::name`]).
    pub fn named(name: &str) -> Option<Compression> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The extension objects so compressed end in (`.gz`), none for plain ones.
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some(".gz"),
            Compression::Zstd => Some(".zst"),
            Compression::Bzip2 => Some(".bz2"),
        }
    }

    /// The compression a key's extension names, and the key without it (case ignored).
    pub fn of_name(key: &str) -> (Compression, &str) {
        for compression in Self::ALL {
            if let Some(extension) = compression.extension()
                && key.len() >= extension.len()
                && key.is_char_boundary(key.len() - extension.len())
                && key[key.len() - extension.len()..].eq_ignore_ascii_case(extension)
            {
                return (compression, &key[..key.len() - extension.len()]);
            }
        }
        (Compression::None, key)
    }

    /// The decompressed stream of `compressed`; memory stays the decoder's window and buffers,
    /// whatever the object's size. Concatenated members, frames or streams are read in turn, as
    /// the command-line tools read them.
    pub fn decoder<'a>(self, compressed: impl BufRead + Send + 'a) -> std::io::Result<Decoded<'a>> {
        let decoded: Decoded<'a> = match self {
            Compression::None => Box::new(compressed),
            Compression::Gzip => Box::new(std::io::BufReader::with_capacity(
                DECODED_BUFFER,
                flate2::bufread::MultiGzDecoder::new(compressed),
            )),
            Compression::Zstd => {
                let mut decoder = zstd::stream::read::Decoder::with_buffer(compressed)?;
                decoder.window_log_max(ZSTD_MAX_WINDOW_LOG)?;
                Box::new(std::io::BufReader::with_capacity(DECODED_BUFFER, decoder))
            }
            Compression::Bzip2 => Box::new(std::io::BufReader::with_capacity(
                DECODED_BUFFER,
                bzip2::bufread::MultiBzDecoder::new(compressed),
            )),
        };
        Ok(decoded)
    }
}

/// A decompressed stream.
pub type Decoded<'a> = Box<dyn BufRead + Send + 'a>;

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use proptest::prelude::*;

    use super::*;

    fn compress(compression: Compression, parts: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        // Each part its own member, frame or stream, as concatenating files makes them.
        for part in parts {
            match compression {
                Compression::None => out.extend_from_slice(part),
                Compression::Gzip => {
                    let mut encoder =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                    encoder.write_all(part).unwrap();
                    out.extend(encoder.finish().unwrap());
                }
                Compression::Zstd => out.extend(zstd::encode_all(*part, 3).unwrap()),
                Compression::Bzip2 => {
                    let mut encoder =
                        bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
                    encoder.write_all(part).unwrap();
                    out.extend(encoder.finish().unwrap());
                }
            }
        }
        out
    }

    fn decode(compression: Compression, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut decoded = Vec::new();
        compression.decoder(bytes)?.read_to_end(&mut decoded)?;
        Ok(decoded)
    }

    #[test]
    fn names_and_extensions_round_trip() {
        for compression in Compression::ALL {
            assert_eq!(Compression::named(compression.name()), Some(compression));
            let key = format!("day.csv{}", compression.extension().unwrap_or(""));
            assert_eq!(Compression::of_name(&key), (compression, "day.csv"));
        }
        assert_eq!(
            Compression::of_name("A.JSONL.ZST"),
            (Compression::Zstd, "A.JSONL")
        );
        assert_eq!(Compression::of_name("gz"), (Compression::None, "gz"));
        assert_eq!(Compression::of_name("é.bz"), (Compression::None, "é.bz"));
    }

    #[test]
    fn broken_streams_fail_instead_of_ending_short() {
        let text = b"id,name\n1,a\n2,b\n".repeat(1000);
        for compression in [Compression::Gzip, Compression::Zstd, Compression::Bzip2] {
            let whole = compress(compression, &[&text]);
            let truncated = &whole[..whole.len() - 8];
            assert!(
                decode(compression, truncated).is_err(),
                "{} truncated",
                compression.name()
            );
            let mut corrupt = whole.clone();
            let middle = corrupt.len() / 2;
            corrupt[middle] ^= 0x55;
            assert!(
                decode(compression, &corrupt).map_or(true, |d| d != text),
                "{} corrupt",
                compression.name()
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn concatenated_parts_decode_to_their_concatenation(
            parts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..3000), 1..4),
            which in 0usize..4,
        ) {
            let compression = Compression::ALL[which];
            let slices: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            let decoded = decode(compression, &compress(compression, &slices)).unwrap();
            prop_assert_eq!(decoded, parts.concat());
        }
    }
}
