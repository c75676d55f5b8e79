//! SHA-256 whose state can be saved at a block boundary and restored later, so that a resumed
//! upload hashes only the bytes it has not hashed yet. Part boundaries are whole MiB, so every
//! part ends on a 64-byte block boundary.

use sha2::compress256;
use sha2::digest::generic_array::GenericArray;
use sha2::digest::typenum::U64;

const INITIAL: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// A SHA-256 computation that can be checkpointed between blocks.
#[derive(Clone, Debug)]
pub struct ResumableSha256 {
    state: [u32; 8],
    /// Bytes hashed so far, including those waiting in `pending`.
    length: u64,
    pending: Vec<u8>,
}

/// A saved state: the hash of the first `length` bytes, before finalization.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HashState {
    /// Bytes hashed, a multiple of 64 (a block boundary).
    pub length: u64,
    /// SHA-256's eight chaining words after those bytes.
    pub state: [u32; 8],
}

impl HashState {
    /// The state as 64 hex digits, for status.
    pub fn state_hex(&self) -> String {
        self.state.iter().map(|w| format!("{w:08x}")).collect()
    }

    /// A state read back from status: `length` and the 64 hex digits of [`Self::state_hex`];
    /// `None` unless both are a valid state.
    pub fn from_hex(length: u64, hex: &str) -> Option<Self> {
        if hex.len() != 64 || !length.is_multiple_of(64) {
            return None;
        }
        let mut state = [0u32; 8];
        for (i, word) in state.iter_mut().enumerate() {
            *word = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        }
        Some(Self { length, state })
    }
}

impl Default for ResumableSha256 {
    fn default() -> Self {
        Self {
            state: INITIAL,
            length: 0,
            pending: Vec::with_capacity(64),
        }
    }
}

impl ResumableSha256 {
    /// Continues from a saved state, as if its first `length` bytes had been hashed here.
    pub fn resume(checkpoint: HashState) -> Self {
        Self {
            state: checkpoint.state,
            length: checkpoint.length,
            pending: Vec::with_capacity(64),
        }
    }

    /// Hashes `data` after the bytes so far.
    pub fn update(&mut self, mut data: &[u8]) {
        self.length += data.len() as u64;
        if !self.pending.is_empty() {
            let take = (64 - self.pending.len()).min(data.len());
            self.pending.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.pending.len() < 64 {
                return;
            }
            compress256(&mut self.state, &[*GenericArray::from_slice(&self.pending)]);
            self.pending.clear();
        }
        let whole = data.len() / 64 * 64;
        compress256(&mut self.state, blocks(&data[..whole]));
        self.pending.extend_from_slice(&data[whole..]);
    }

    /// The state after the bytes so far, when they end on a block boundary.
    pub fn checkpoint(&self) -> Option<HashState> {
        self.pending.is_empty().then_some(HashState {
            length: self.length,
            state: self.state,
        })
    }

    /// Bytes hashed so far (a resumed hash counts the checkpoint's too).
    pub fn length(&self) -> u64 {
        self.length
    }

    /// The digest, as lowercase hex.
    pub fn finalize_hex(mut self) -> String {
        let bits = self.length.wrapping_mul(8);
        let mut tail = std::mem::take(&mut self.pending);
        tail.push(0x80);
        while tail.len() % 64 != 56 {
            tail.push(0);
        }
        tail.extend_from_slice(&bits.to_be_bytes());
        for block in tail.chunks(64) {
            compress256(&mut self.state, &[*GenericArray::from_slice(block)]);
        }
        self.state.iter().map(|w| format!("{w:08x}")).collect()
    }
}

/// Views whole 64-byte blocks without copying.
fn blocks(data: &[u8]) -> &[GenericArray<u8, U64>] {
    assert_eq!(data.len() % 64, 0);
    // SAFETY: GenericArray<u8, U64> is repr(transparent) over [u8; 64] (alignment 1), and the
    // length is a whole number of blocks.
    unsafe { std::slice::from_raw_parts(data.as_ptr().cast(), data.len() / 64) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 300) as u8).collect()
    }

    #[test]
    fn matches_sha256_for_any_split() {
        for len in [0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 1000, 70_000] {
            let bytes = data(len);
            let want = hex::encode(Sha256::digest(&bytes));
            for split in [0, 1, 63, 64, 65, len / 2, len] {
                let split = split.min(len);
                let mut h = ResumableSha256::default();
                h.update(&bytes[..split]);
                h.update(&bytes[split..]);
                assert_eq!(h.finalize_hex(), want, "len {len} split {split}");
            }
        }
    }

    #[test]
    fn resumes_from_a_saved_checkpoint() {
        let bytes = data(5 * 4096 + 17);
        let mut first = ResumableSha256::default();
        first.update(&bytes[..3 * 4096]);
        let saved = first.checkpoint().unwrap();
        let restored = HashState::from_hex(saved.length, &saved.state_hex()).unwrap();
        assert_eq!(restored, saved);
        let mut resumed = ResumableSha256::resume(restored);
        resumed.update(&bytes[3 * 4096..]);
        assert_eq!(resumed.finalize_hex(), hex::encode(Sha256::digest(&bytes)));
        let mut unaligned = ResumableSha256::default();
        unaligned.update(&bytes[..100]);
        assert_eq!(unaligned.checkpoint(), None);
        assert_eq!(HashState::from_hex(100, &saved.state_hex()), None);
    }
}
