//! `BlockAllocator`: the pool of KV blocks, with a reference count per block and an automatic
//! prefix cache.
//!
//! Free blocks wait in least-recently-freed order. A full block can be registered under the
//! chained hash of its tokens (`register`); it keeps that hash after it is freed, so a later
//! sequence with the same prefix can take it back (`acquire_cached`) instead of recomputing it.
//! A cached free block is evicted (its hash forgotten) only when `allocate` needs a block and it
//! is the least recently freed.
//!
//! Invariants (checked by the tests below and the property test):
//! - `num_free() + num_used() == num_total()` at all times;
//! - a block is free iff its reference count is 0;
//! - a block is never handed out twice without being freed in between, unless it is shared
//!   explicitly (`share`, `acquire_cached`);
//! - a hash maps to at most one block, and that block carries the hash;
//! - freeing a block more often than it was taken is a bug and panics.
//!
//! With events on (`enable_events`), every eviction of a cached hash is logged, and the
//! scheduler logs each newly registered block with its tokens (`log_stored`), in one
//! `KvEventLog` drained each step (`take_events`).
//!
//! All operations are O(log n) per block touched. No tensors here.

use super::events::{KvEvent, KvEventLog};
use std::collections::{BTreeMap, HashMap};

/// Index of a KV block in the pool (the same index in every layer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockId(pub u32);

/// Chained SHA-256 of a full block's tokens and of every block before it (collision resistant:
/// a crafted prompt cannot map onto another request's block and read its K/V).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockHash(pub [u8; 32]);

impl BlockHash {
    /// Where every chain starts: SHA-256 of a domain tag and the request's `cache_salt`, so
    /// requests with different salts never share a block.
    pub fn root(salt: Option<&str>) -> Self {
        Self::root_for(salt, None)
    }

    /// The root of a request with `salt` running on adapter `lora` (a LoRA adapter's K/V
    /// differs from the base model's for the same tokens).
    pub fn root_for(salt: Option<&str>, lora: Option<u32>) -> Self {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"weir prefix cache v1\0");
        if let Some(s) = salt {
            h.update([1u8]);
            h.update((s.len() as u64).to_le_bytes());
            h.update(s.as_bytes());
        }
        if let Some(l) = lora {
            h.update([2u8]);
            h.update(l.to_le_bytes());
        }
        Self(h.finalize().into())
    }
}

#[derive(Debug)]
pub struct BlockAllocator {
    /// free-order stamp -> block; the first entry is the least recently freed
    free: BTreeMap<u64, BlockId>,
    /// [num_blocks] stamp of each free block's entry in `free`
    free_stamp: Vec<u64>,
    next_stamp: u64,
    ref_counts: Vec<u32>,
    /// [num_blocks] hash a block is registered under
    hashes: Vec<Option<BlockHash>>,
    cached: HashMap<BlockHash, BlockId>,
    /// `Some` when KV events are published.
    events: Option<KvEventLog>,
    /// [num_blocks] whether the block's hash is one the events never name (`register_unlogged`).
    unlogged: Vec<bool>,
}

impl BlockAllocator {
    pub fn new(num_blocks: usize) -> Self {
        let n = u32::try_from(num_blocks).expect("block count fits in u32");
        Self {
            free: (0..n).map(|b| (u64::from(b), BlockId(b))).collect(),
            free_stamp: (0..u64::from(n)).collect(),
            next_stamp: u64::from(n),
            ref_counts: vec![0; num_blocks],
            hashes: vec![None; num_blocks],
            cached: HashMap::new(),
            events: None,
            unlogged: vec![false; num_blocks],
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

    /// Blocks registered in the prefix cache (in use or free).
    pub fn num_cached(&self) -> usize {
        self.cached.len()
    }

    pub fn can_allocate(&self, n: usize) -> bool {
        n <= self.free.len()
    }

    /// Takes `n` blocks (least recently freed first, evicting their cached hashes), or none at
    /// all when fewer than `n` are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if !self.can_allocate(n) {
            return None;
        }
        let mut blocks = Vec::with_capacity(n);
        for _ in 0..n {
            let (_, b) = self.free.pop_first().expect("checked by can_allocate");
            debug_assert_eq!(self.ref_counts[b.0 as usize], 0);
            self.ref_counts[b.0 as usize] = 1;
            if let Some(h) = self.hashes[b.0 as usize].take() {
                self.cached.remove(&h);
                let logged = !std::mem::take(&mut self.unlogged[b.0 as usize]);
                if let Some(log) = self.events.as_mut().filter(|_| logged) {
                    log.removed(h);
                }
            }
            blocks.push(b);
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

    /// Drops one owner of each block; blocks without owners become free (keeping their hash).
    pub fn free(&mut self, blocks: &[BlockId]) {
        for b in blocks {
            let rc = &mut self.ref_counts[b.0 as usize];
            assert!(*rc > 0, "double free of block {b:?}. This is a bug.");
            *rc -= 1;
            if *rc == 0 {
                let stamp = self.next_stamp;
                self.next_stamp += 1;
                self.free_stamp[b.0 as usize] = stamp;
                self.free.insert(stamp, *b);
            }
        }
    }

    #[cfg(test)]
    fn ref_count(&self, block: BlockId) -> u32 {
        self.ref_counts[block.0 as usize]
    }

    /// The cached block holding `hash`, if any (in use or free).
    pub fn lookup(&self, hash: BlockHash) -> Option<BlockId> {
        self.cached.get(&hash).copied()
    }

    /// Whether `block` is free (a cached hit on it takes a free block off the pool).
    pub fn is_free(&self, block: BlockId) -> bool {
        self.ref_counts[block.0 as usize] == 0
    }

    /// Takes an owner of the cached block holding `hash`, off the free list if it was free.
    pub fn acquire_cached(&mut self, hash: BlockHash) -> Option<BlockId> {
        let b = self.lookup(hash)?;
        if self.ref_counts[b.0 as usize] == 0 {
            self.free.remove(&self.free_stamp[b.0 as usize]);
        }
        self.ref_counts[b.0 as usize] += 1;
        Some(b)
    }

    /// Registers an allocated, full block under `hash`; false when nothing changed: a hash
    /// already held by another block keeps that block (the two have the same content).
    pub fn register(&mut self, block: BlockId, hash: BlockHash) -> bool {
        debug_assert!(
            self.ref_counts[block.0 as usize] > 0,
            "register a free block"
        );
        if self.cached.contains_key(&hash) || self.hashes[block.0 as usize].is_some() {
            return false;
        }
        self.hashes[block.0 as usize] = Some(hash);
        self.cached.insert(hash, block);
        true
    }

    /// `register`, for a hash the KV events never name (a hybrid model's other KV groups: the
    /// router knows a block of tokens by its first group's key), so its eviction is not logged
    /// either.
    pub fn register_unlogged(&mut self, block: BlockId, hash: BlockHash) -> bool {
        let new = self.register(block, hash);
        if new {
            self.unlogged[block.0 as usize] = true;
        }
        new
    }

    /// Starts logging KV events.
    pub fn enable_events(&mut self) {
        self.events.get_or_insert_with(KvEventLog::default);
    }

    /// Logs a newly registered block (see `register`) with its tokens, when events are on.
    pub fn log_stored(&mut self, hash: BlockHash, parent: Option<BlockHash>, tokens: &[u32]) {
        if let Some(log) = &mut self.events {
            log.stored(hash, parent, tokens);
        }
    }

    /// The events since the last call (none when events are off).
    pub fn take_events(&mut self) -> Vec<KvEvent> {
        self.events
            .as_mut()
            .map(KvEventLog::take)
            .unwrap_or_default()
    }
}

/// Hash of a full block given the hash of the block before it (`BlockHash::root` for the first
/// block): SHA-256 over the parent hash and the tokens as little-endian u32s.
pub fn chain_hash(parent: BlockHash, tokens: &[u32]) -> BlockHash {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(parent.0);
    for t in tokens {
        h.update(t.to_le_bytes());
    }
    BlockHash(h.finalize().into())
}

#[cfg(test)]
#[path = "block_allocator_tests.rs"]
mod tests;
