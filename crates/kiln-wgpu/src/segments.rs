//! Blocks within segments: the bookkeeping of the pool's sub-allocation (see `pool`), kept
//! free of wgpu so a unit test can drive it through random allocation sequences.
//!
//! A segment is one driver buffer cut into blocks that tile it, each lent or free. A request
//! takes the smallest free block that fits (best fit, over every segment); the rest of that
//! block stays free when it is at least `min_rest` bytes, else goes along with the request (a
//! smaller rest could serve no request that comes here). A block given back merges with free
//! neighbours, so a segment whose blocks are all back is one free block again, and only such a
//! segment can go back to the driver. PyTorch's caching allocator keeps its large blocks the
//! same way.

use std::collections::{BTreeMap, BTreeSet};

/// One block lent out: its segment, byte offset and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    pub seg: usize,
    pub offset: u64,
    pub size: u64,
}

struct Segment<B> {
    /// What the segment stands for (the driver buffer; `()` in tests).
    buffer: B,
    size: u64,
    /// Every block by offset: its size and whether it is free. The blocks tile the segment.
    blocks: BTreeMap<u64, (u64, bool)>,
    /// Bytes lent out of it.
    used: u64,
}

pub(crate) struct Segments<B> {
    segs: Vec<Option<Segment<B>>>,
    /// Free blocks as (size, segment, offset): the first at or after (n, 0, 0) is the best fit.
    free: BTreeSet<(u64, usize, u64)>,
    /// Bytes in free blocks, and in segments altogether.
    pub free_bytes: u64,
    pub held_bytes: u64,
    min_rest: u64,
}

impl<B> Default for Segments<B> {
    fn default() -> Self {
        Segments::new(0)
    }
}

impl<B> Segments<B> {
    /// `min_rest`: the smallest rest a split leaves free.
    pub(crate) fn new(min_rest: u64) -> Self {
        Segments { segs: Vec::new(), free: BTreeSet::new(), free_bytes: 0, held_bytes: 0, min_rest }
    }

    /// Adds a wholly free segment of `size` bytes; returns its index.
    pub(crate) fn add(&mut self, buffer: B, size: u64) -> usize {
        let seg = Segment { buffer, size, blocks: BTreeMap::from([(0, (size, true))]), used: 0 };
        let id = match self.segs.iter().position(Option::is_none) {
            Some(i) => {
                self.segs[i] = Some(seg);
                i
            }
            None => {
                self.segs.push(Some(seg));
                self.segs.len() - 1
            }
        };
        self.free.insert((size, id, 0));
        self.free_bytes += size;
        self.held_bytes += size;
        id
    }

    /// The smallest free block of at least `size` bytes, split when the rest is worth keeping.
    pub(crate) fn take(&mut self, size: u64) -> Option<Block> {
        let &(have, seg, offset) = self.free.range((size, 0, 0)..).next()?;
        self.free.remove(&(have, seg, offset));
        let s = self.segs[seg].as_mut().expect("a free block's segment exists");
        let lent = if have - size >= self.min_rest {
            let rest = (offset + size, have - size);
            s.blocks.insert(rest.0, (rest.1, true));
            self.free.insert((rest.1, seg, rest.0));
            size
        } else {
            have
        };
        s.blocks.insert(offset, (lent, false));
        s.used += lent;
        self.free_bytes -= lent;
        Some(Block { seg, offset, size: lent })
    }

    /// Takes `block` back and merges it with free neighbours; returns whether its segment is
    /// now wholly free.
    pub(crate) fn give(&mut self, block: Block) -> bool {
        let s = self.segs[block.seg].as_mut().expect("a lent block's segment exists");
        debug_assert_eq!(s.blocks.get(&block.offset), Some(&(block.size, false)));
        s.used -= block.size;
        self.free_bytes += block.size;
        let (mut offset, mut size) = (block.offset, block.size);
        if let Some((&after, &(n, true))) = s.blocks.range(offset + size..).next()
            && after == offset + size
        {
            s.blocks.remove(&after);
            self.free.remove(&(n, block.seg, after));
            size += n;
        }
        if let Some((&before, &(n, true))) = s.blocks.range(..offset).next_back()
            && before + n == offset
        {
            s.blocks.remove(&offset);
            self.free.remove(&(n, block.seg, before));
            offset = before;
            size += n;
        }
        s.blocks.insert(offset, (size, true));
        self.free.insert((size, block.seg, offset));
        s.used == 0
    }

    pub(crate) fn buffer(&self, seg: usize) -> &B {
        &self.segs[seg].as_ref().expect("a lent block's segment exists").buffer
    }

    /// The largest wholly free segment: (index, size).
    pub(crate) fn largest_empty(&self) -> Option<(usize, u64)> {
        self.empty().max_by_key(|e| e.1)
    }

    fn empty(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.segs.iter().enumerate().filter_map(|(i, s)| s.as_ref().filter(|s| s.used == 0).map(|s| (i, s.size)))
    }

    /// Removes a wholly free segment; returns its buffer and size.
    pub(crate) fn remove(&mut self, seg: usize) -> (B, u64) {
        let s = self.segs[seg].take().expect("the segment exists");
        assert_eq!(s.used, 0, "only a wholly free segment goes");
        self.free.remove(&(s.size, seg, 0));
        self.free_bytes -= s.size;
        self.held_bytes -= s.size;
        (s.buffer, s.size)
    }

    /// Removes every wholly free segment; returns their bytes.
    pub(crate) fn remove_empty(&mut self) -> u64 {
        let empty: Vec<usize> = self.empty().map(|e| e.0).collect();
        empty.into_iter().map(|i| self.remove(i).1).sum()
    }

    /// Every block of every segment as (segment, offset, size, free), for tests.
    #[cfg(test)]
    fn blocks(&self) -> Vec<(usize, u64, u64, bool)> {
        let mut all = Vec::new();
        for (i, s) in self.segs.iter().enumerate() {
            if let Some(s) = s {
                all.extend(s.blocks.iter().map(|(&o, &(n, f))| (i, o, n, f)));
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::{Block, Segments};

    /// A small deterministic generator (xorshift), so a failure repeats.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    const ALIGN: u64 = 256;

    /// Checks every invariant against the blocks the test believes are lent.
    fn check(s: &Segments<()>, lent: &[Block]) {
        let blocks = s.blocks();
        let mut held = 0;
        let mut free = 0;
        for seg in blocks.iter().map(|b| b.0).collect::<std::collections::BTreeSet<_>>() {
            let mine: Vec<_> = blocks.iter().filter(|b| b.0 == seg).collect();
            // The blocks tile the segment: each starts where the last ended.
            let mut at = 0;
            for (i, b) in mine.iter().enumerate() {
                assert_eq!(b.1, at, "segment {seg}: a gap or an overlap at {at}");
                assert_eq!(b.1 % ALIGN, 0, "unaligned block {b:?}");
                assert!(b.2 > 0);
                // Freed neighbours coalesce: no two free blocks side by side.
                if i > 0 {
                    assert!(!(b.3 && mine[i - 1].3), "free neighbours left apart in segment {seg}: {mine:?}");
                }
                at += b.2;
                if b.3 {
                    free += b.2;
                }
            }
            held += at;
        }
        assert_eq!(s.held_bytes, held);
        assert_eq!(s.free_bytes, free);
        // Exactly the blocks lent out are marked lent.
        let mut marked: Vec<_> = blocks.iter().filter(|b| !b.3).map(|b| (b.0, b.1, b.2)).collect();
        let mut expect: Vec<_> = lent.iter().map(|b| (b.seg, b.offset, b.size)).collect();
        marked.sort();
        expect.sort();
        assert_eq!(marked, expect);
        assert_eq!(s.free.len(), blocks.iter().filter(|b| b.3).count());
    }

    #[test]
    fn random_sequences_keep_blocks_apart_aligned_and_coalesced() {
        for seed in 1..=40u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let min_rest = 4 * ALIGN;
            let mut s = Segments::new(min_rest);
            let mut lent: Vec<Block> = Vec::new();
            for _ in 0..600 {
                if lent.is_empty() || rng.next() % 5 < 3 {
                    let want = (1 + rng.next() % 64) * ALIGN;
                    let b = match s.take(want) {
                        Some(b) => b,
                        None => {
                            let size = (want.max(32 * ALIGN)).next_multiple_of(8 * ALIGN);
                            s.add((), size);
                            s.take(want).expect("a fresh segment fits the request")
                        }
                    };
                    assert!(b.size >= want && b.size < want + min_rest, "{want} got {b:?}");
                    lent.push(b);
                } else {
                    let i = (rng.next() % lent.len() as u64) as usize;
                    let b = lent.swap_remove(i);
                    let empty = s.give(b);
                    assert_eq!(empty, !lent.iter().any(|l| l.seg == b.seg));
                    if empty && rng.next().is_multiple_of(3) {
                        s.remove(b.seg);
                    }
                }
                check(&s, &lent);
            }
            // Everything back: every segment is one free block, and all of it can go.
            for b in lent.drain(..) {
                s.give(b);
            }
            check(&s, &lent);
            assert!(s.blocks().iter().all(|b| b.1 == 0 && b.3));
            let held = s.held_bytes;
            assert_eq!(s.remove_empty(), held);
            assert_eq!((s.held_bytes, s.free_bytes), (0, 0));
        }
    }

    #[test]
    fn best_fit_and_split() {
        let mut s = Segments::new(1024);
        let a = s.add((), 8192);
        let b = s.add((), 4096);
        // 3000 bytes fit best in the 4096 segment; the 1096 left is kept free.
        let x = s.take(3000).unwrap();
        assert_eq!((x.seg, x.offset, x.size), (b, 0, 3000));
        // 1000 fits the 1096 rest, whose remainder (96) is too small to keep: it goes along.
        let y = s.take(1000).unwrap();
        assert_eq!((y.seg, y.offset, y.size), (b, 3000, 1096));
        let z = s.take(2048).unwrap();
        assert_eq!((z.seg, z.offset), (a, 0));
        assert!(!s.give(x));
        assert!(s.give(y), "x and y merged: segment b is wholly free");
        assert_eq!(s.largest_empty().map(|e| e.0), Some(b));
        assert!(s.give(z));
        assert_eq!(s.largest_empty().map(|e| e.0), Some(a));
        assert_eq!(s.remove_empty(), 8192 + 4096);
    }
}
