//! What an object's first bytes (its magic number) say it is.

use super::Compression;

/// Every Parquet file starts and ends with these bytes.
pub const PARQUET_MAGIC: &[u8; 4] = b"PAR1";

/// What a magic number says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Magic {
    /// A Parquet file (`PAR1`).
    Parquet,
    /// A compressed stream s3flow knows.
    Compressed(Compression),
    /// An archive or compression s3flow does not read (`xz`, `zip`).
    Unsupported(&'static str),
}

impl Magic {
    /// The name messages give it.
    pub fn name(self) -> &'static str {
        match self {
            Magic::Parquet => "Parquet",
            Magic::Compressed(compression) => compression.name(),
            Magic::Unsupported(name) => name,
        }
    }
}

/// What `bytes` start with, when their first bytes say.
pub fn magic(bytes: &[u8]) -> Option<Magic> {
    const MAGICS: &[(&[u8], Magic)] = &[
        (PARQUET_MAGIC, Magic::Parquet),
        (&[0x1f, 0x8b], Magic::Compressed(Compression::Gzip)),
        (
            &[0x28, 0xb5, 0x2f, 0xfd],
            Magic::Compressed(Compression::Zstd),
        ),
        (b"BZh", Magic::Compressed(Compression::Bzip2)),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], Magic::Unsupported("xz")),
        (&[b'P', b'K', 3, 4], Magic::Unsupported("zip")),
    ];
    MAGICS
        .iter()
        .find(|(magic, _)| bytes.starts_with(magic))
        .map(|(_, kind)| *kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_numbers_name_formats_and_compressions() {
        for (bytes, expected) in [
            (&b"PAR1xxxx"[..], Some(Magic::Parquet)),
            (
                &[0x1f, 0x8b, 8, 0][..],
                Some(Magic::Compressed(Compression::Gzip)),
            ),
            (
                &[0x28, 0xb5, 0x2f, 0xfd, 0][..],
                Some(Magic::Compressed(Compression::Zstd)),
            ),
            (&b"BZh91AY"[..], Some(Magic::Compressed(Compression::Bzip2))),
            (
                &[0xfd, b'7', b'z', b'X', b'Z', 0, 0][..],
                Some(Magic::Unsupported("xz")),
            ),
            (&b"PK\x03\x04"[..], Some(Magic::Unsupported("zip"))),
            (&b"id,name\n"[..], None),
            (&b""[..], None),
        ] {
            assert_eq!(magic(bytes), expected, "{bytes:?}");
        }
    }
}
