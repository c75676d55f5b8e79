//! Packing a scan's objects into chunks, in key order and in one pass: an object larger than the
//! chunk size is split into windows of that size, and small objects share a chunk, each costing
//! its bytes plus an open cost (a request and a header or footer read), at most so many objects
//! a chunk. Each window of a split object is a chunk of its own, so that a chunk's start state is
//! the end state of the chunk before it, as for one object in byte ranges.

/// Bytes an object costs a chunk beyond its own: the request, and its header or footer.
pub const DEFAULT_OBJECT_OPEN_COST: u64 = 1 << 20;

/// Most objects one chunk reads.
pub const DEFAULT_MAX_OBJECTS_PER_CHUNK: u32 = 1000;

/// A byte range `[start, end)` of the scan's object number `object` (its place in key order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Piece {
    /// The object's place in key order.
    pub object: u64,
    /// First byte of the range.
    pub start: u64,
    /// One past its last byte.
    pub end: u64,
}

/// How objects are packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packing {
    /// Bytes a chunk reads, at most (a piece alone may be an object that cannot be split).
    pub chunk_size: u64,
    /// What opening an object costs a chunk, in bytes.
    pub object_open_cost: u64,
    /// Most objects one chunk reads.
    pub max_objects_per_chunk: u32,
}

/// Packs objects as they come, handing out each chunk once it is full.
#[derive(Debug)]
pub struct Packer {
    packing: Packing,
    current: Vec<Piece>,
    cost: u64,
}

impl Packer {
    /// A packer of chunks of `packing`; a zero chunk size is taken as one byte.
    pub fn new(packing: Packing) -> Packer {
        Packer {
            packing: Packing {
                chunk_size: packing.chunk_size.max(1),
                max_objects_per_chunk: packing.max_objects_per_chunk.max(1),
                ..packing
            },
            current: Vec::new(),
            cost: 0,
        }
    }

    /// Adds the next object in key order, `size` bytes, which can be split in byte ranges when
    /// `splittable` (a compressed stream cannot): the chunks it completes, in order.
    pub fn add(&mut self, object: u64, size: u64, splittable: bool) -> Vec<Vec<Piece>> {
        let mut full = Vec::new();
        let chunk_size = self.packing.chunk_size;
        let windows = match splittable {
            true => size.div_ceil(chunk_size).max(1),
            false => 1,
        };
        for window in 0..windows {
            let start = window * chunk_size;
            let end = match splittable {
                true => (start + chunk_size).min(size),
                false => size,
            };
            let piece = Piece { object, start, end };
            let cost = (end - start).saturating_add(self.packing.object_open_cost);
            let fits = self.cost.saturating_add(cost) <= chunk_size
                && self.current.len() < self.packing.max_objects_per_chunk as usize;
            // A mid-object piece starts its chunk: its start state is the previous chunk's end.
            if !self.current.is_empty() && (windows > 1 || !fits) {
                full.push(std::mem::take(&mut self.current));
                self.cost = 0;
            }
            self.current.push(piece);
            self.cost = self.cost.saturating_add(cost);
        }
        // Each window of a split object is a chunk of its own: a chunk's end state is then the
        // end state of its one piece, which the next window's chunk starts from.
        if windows > 1 {
            full.push(std::mem::take(&mut self.current));
            self.cost = 0;
        }
        full
    }

    /// The last chunk, when pieces are left.
    pub fn finish(self) -> Option<Vec<Piece>> {
        (!self.current.is_empty()).then_some(self.current)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pack(packing: Packing, objects: &[(u64, bool)]) -> Vec<Vec<Piece>> {
        let mut packer = Packer::new(packing);
        let mut chunks = Vec::new();
        for (ordinal, (size, splittable)) in objects.iter().enumerate() {
            chunks.extend(packer.add(ordinal as u64, *size, *splittable));
        }
        chunks.extend(packer.finish());
        chunks
    }

    fn piece(object: u64, start: u64, end: u64) -> Piece {
        Piece { object, start, end }
    }

    #[test]
    fn small_objects_share_chunks_and_large_ones_are_split() {
        let packing = Packing {
            chunk_size: 100,
            object_open_cost: 10,
            max_objects_per_chunk: 3,
        };
        // (objects: size, splittable) -> chunks
        type Case<'a> = (&'a [(u64, bool)], Vec<Vec<Piece>>);
        let cases: &[Case] = &[
            (&[], vec![]),
            (
                &[(20, true), (20, true), (20, true)],
                vec![vec![piece(0, 0, 20), piece(1, 0, 20), piece(2, 0, 20)]],
            ),
            // The fourth would pass the object bound.
            (
                &[(1, true), (1, true), (1, true), (1, true)],
                vec![
                    vec![piece(0, 0, 1), piece(1, 0, 1), piece(2, 0, 1)],
                    vec![piece(3, 0, 1)],
                ],
            ),
            // 45 + 10 is 55: two do not fit 100 bytes.
            (
                &[(45, true), (45, true), (45, true)],
                vec![
                    vec![piece(0, 0, 45)],
                    vec![piece(1, 0, 45)],
                    vec![piece(2, 0, 45)],
                ],
            ),
            (
                &[(40, true), (250, true), (5, true)],
                vec![
                    vec![piece(0, 0, 40)],
                    vec![piece(1, 0, 100)],
                    vec![piece(1, 100, 200)],
                    vec![piece(1, 200, 250)],
                    vec![piece(2, 0, 5)],
                ],
            ),
            // A compressed object is one piece, however large.
            (
                &[(5, true), (350, false), (5, true)],
                vec![
                    vec![piece(0, 0, 5)],
                    vec![piece(1, 0, 350)],
                    vec![piece(2, 0, 5)],
                ],
            ),
            // An empty object is a piece too: it has a header to check.
            (&[(0, true)], vec![vec![piece(0, 0, 0)]]),
            // A split object's first window is a chunk of its own however little came before.
            (
                &[(0, true), (150, true)],
                vec![
                    vec![piece(0, 0, 0)],
                    vec![piece(1, 0, 100)],
                    vec![piece(1, 100, 150)],
                ],
            ),
        ];
        for (objects, chunks) in cases {
            assert_eq!(pack(packing, objects), *chunks, "{objects:?}");
        }
    }

    proptest! {
        /// The pieces tile every object, in key order; a piece that starts mid-object starts its
        /// chunk; no chunk passes its bounds unless it is one piece.
        #[test]
        fn pieces_tile_every_object_once(
            objects in prop::collection::vec((0u64..5000, any::<bool>()), 0..60),
            chunk_size in 1u64..2000,
            object_open_cost in 0u64..500,
            max_objects_per_chunk in 1u32..8,
        ) {
            let packing = Packing { chunk_size, object_open_cost, max_objects_per_chunk };
            let chunks = pack(packing, &objects);
            let pieces: Vec<Piece> = chunks.iter().flatten().copied().collect();
            let mut at = 0;
            for (ordinal, (size, splittable)) in objects.iter().enumerate() {
                let mut covered = 0;
                let mut first = true;
                while at < pieces.len() && pieces[at].object == ordinal as u64 {
                    let piece = pieces[at];
                    prop_assert_eq!(piece.start, covered);
                    prop_assert!(piece.end > piece.start || (*size == 0 && first));
                    prop_assert!(*splittable || (piece.start, piece.end) == (0, *size));
                    covered = piece.end;
                    first = false;
                    at += 1;
                }
                prop_assert!(!first, "object {} has a piece", ordinal);
                prop_assert_eq!(covered, *size);
            }
            prop_assert_eq!(at, pieces.len());
            for chunk in &chunks {
                prop_assert!(!chunk.is_empty());
                prop_assert!(chunk.iter().skip(1).all(|p| p.start == 0), "{:?}", chunk);
                // A window of a split object is alone in its chunk.
                let split = |p: &Piece| p.start > 0 || objects[p.object as usize].0 > chunk_size && objects[p.object as usize].1;
                prop_assert!(chunk.len() == 1 || !chunk.iter().any(split), "{:?}", chunk);
                prop_assert!(chunk.len() <= max_objects_per_chunk as usize);
                let cost: u64 = chunk.iter().map(|p| p.end - p.start + object_open_cost).sum();
                prop_assert!(chunk.len() == 1 || cost <= chunk_size, "{:?}", chunk);
            }
        }
    }
}
