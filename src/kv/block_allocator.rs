//! `BlockAllocator`: the pool of KV blocks, a free list plus a reference count per block.
//!
//! Invariants (checked by the tests below and the property test):
//! - `num_free() + num_used() == num_total()` at all times;
//! - a block is on the free list iff its reference count is 0;
//! - a block is never handed out twice without being freed in between, unless it is shared
//!   explicitly with `share`;
//! - freeing a block more often than it was allocated or shared is a bug and panics.
//!
//! All operations are O(number of blocks touched). No tensors here.

use std::collections::VecDeque;

/// Index of a KV block in the pool (the same index in every layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub u32);

#[derive(Debug)]
pub struct BlockAllocator {
    free: VecDeque<BlockId>,
    ref_counts: Vec<u32>,
}

impl BlockAllocator {
    pub fn new(num_blocks: usize) -> Self {
        let num_blocks = u32::try_from(num_blocks).expect("block count fits in u32");
        Self {
            free: (0..num_blocks).map(BlockId).collect(),
            ref_counts: vec![0; num_blocks as usize],
        }
    }

    pub fn num_total(&self) -> usize {
        self.ref_counts.len()
    }

    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    pub fn num_used(&self) -> usize {
        self.num_total() - self.num_free()
    }

    pub fn can_allocate(&self, n: usize) -> bool {
        n <= self.free.len()
    }

    /// Takes `n` blocks off the free list, or none at all when fewer than `n` are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if !self.can_allocate(n) {
            return None;
        }
        let blocks: Vec<BlockId> = self.free.drain(..n).collect();
        for b in &blocks {
            debug_assert_eq!(self.ref_counts[b.0 as usize], 0);
            self.ref_counts[b.0 as usize] = 1;
        }
        Some(blocks)
    }

    /// Adds an owner to blocks that are already allocated (a fork or a shared prefix).
    pub fn share(&mut self, blocks: &[BlockId]) {
        for b in blocks {
            let rc = &mut self.ref_counts[b.0 as usize];
            assert!(*rc > 0, "sharing free block {b:?}. This is a bug.");
            *rc += 1;
        }
    }

    /// Drops one owner of each block; blocks without owners go back to the free list.
    pub fn free(&mut self, blocks: &[BlockId]) {
        for b in blocks {
            let rc = &mut self.ref_counts[b.0 as usize];
            assert!(*rc > 0, "double free of block {b:?}. This is a bug.");
            *rc -= 1;
            if *rc == 0 {
                self.free.push_back(*b);
            }
        }
    }

    pub fn ref_count(&self, block: BlockId) -> u32 {
        self.ref_counts[block.0 as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[test]
    fn basic_allocation() {
        let mut a = BlockAllocator::new(4);
        let b = a.allocate(3).unwrap();
        assert_eq!(b.len(), 3);
        assert_eq!(a.num_free(), 1);
        assert_eq!(a.num_used(), 3);
    }

    #[test]
    fn fails_when_exhausted() {
        let mut a = BlockAllocator::new(2);
        assert!(a.allocate(3).is_none());
        assert_eq!(a.num_free(), 2, "a failed allocation takes nothing");
        let _b = a.allocate(2).unwrap();
        assert!(!a.can_allocate(1));
        assert!(a.allocate(1).is_none());
    }

    #[test]
    fn free_returns_to_pool() {
        let mut a = BlockAllocator::new(3);
        let b = a.allocate(3).unwrap();
        a.free(&b[..1]);
        assert_eq!(a.num_free(), 1);
        a.free(&b[1..]);
        assert_eq!(a.num_free(), 3);
    }

    #[test]
    fn shared_block_freed_by_last_owner() {
        let mut a = BlockAllocator::new(2);
        let b = a.allocate(1).unwrap();
        a.share(&b);
        a.free(&b);
        assert_eq!(a.num_free(), 1);
        a.free(&b);
        assert_eq!(a.num_free(), 2);
    }

    #[test]
    #[should_panic(expected = "double free")]
    fn double_free_panics() {
        let mut a = BlockAllocator::new(2);
        let b = a.allocate(1).unwrap();
        a.free(&b);
        a.free(&b);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Alloc(usize),
        Free(usize),
        Share(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0usize..6).prop_map(Op::Alloc),
            (0usize..64).prop_map(Op::Free),
            (0usize..64).prop_map(Op::Share),
        ]
    }

    proptest! {
        /// Model-based test: owners are tracked in a plain map and compared after every op.
        #[test]
        fn allocator_matches_model(ops in proptest::collection::vec(op(), 1..200)) {
            let total = 16;
            let mut a = BlockAllocator::new(total);
            // owner handle -> blocks it holds
            let mut owners: Vec<Vec<BlockId>> = Vec::new();
            for op in ops {
                match op {
                    Op::Alloc(n) => {
                        let ok = a.can_allocate(n);
                        match a.allocate(n) {
                            Some(b) => { prop_assert!(ok); owners.push(b); }
                            None => prop_assert!(!ok),
                        }
                    }
                    Op::Free(i) if !owners.is_empty() => {
                        let b = owners.swap_remove(i % owners.len());
                        a.free(&b);
                    }
                    Op::Share(i) if !owners.is_empty() => {
                        let b = owners[i % owners.len()].clone();
                        a.share(&b);
                        owners.push(b);
                    }
                    _ => {}
                }
                let mut expected: HashMap<BlockId, u32> = HashMap::new();
                for b in owners.iter().flatten() {
                    *expected.entry(*b).or_default() += 1;
                }
                prop_assert_eq!(a.num_used(), expected.len());
                prop_assert_eq!(a.num_free() + a.num_used(), total);
                for (b, n) in &expected {
                    prop_assert_eq!(a.ref_count(*b), *n);
                }
            }
            for b in owners.drain(..) {
                a.free(&b);
            }
            prop_assert_eq!(a.num_free(), total);
        }
    }

    /// Seeded stress loop: 20k rounds of random allocate/free, no block with two owners.
    #[test]
    fn seeded_stress_no_double_owner() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let mut rng = StdRng::seed_from_u64(7);
        let total = 64;
        let mut a = BlockAllocator::new(total);
        let mut held: Vec<Vec<BlockId>> = Vec::new();
        for _ in 0..20_000 {
            if rng.random_bool(0.55) {
                if let Some(b) = a.allocate(rng.random_range(1..5)) {
                    held.push(b);
                }
            } else if !held.is_empty() {
                let i = rng.random_range(0..held.len());
                a.free(&held.swap_remove(i));
            }
            let mut seen = std::collections::HashSet::new();
            for b in held.iter().flatten() {
                assert!(seen.insert(*b), "block {b:?} has two owners");
            }
            assert_eq!(seen.len() + a.num_free(), total);
        }
        for b in held {
            a.free(&b);
        }
        assert_eq!(a.num_free(), total);
    }
}
