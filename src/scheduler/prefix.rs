//! The prefix cache's side of the scheduler: which cached blocks a new sequence can take
//! (`find`, `take`), and registering a sequence's newly full blocks (`register`), over every KV group.
//!
//! A block of group `g` is cached under `group_key(chain hash, g)`. A hit of `k` blocks needs
//! every global group's blocks `0..k`, but a sliding group's only from the window of position
//! `k * block_size` on (the first token computed): the blocks before it are never read again,
//! so the sliding groups may have lost them.
//!
//! ```text
//! window 8, block 4, k = 4 (positions 0..16 cached; position 16 sees 9..=16)
//! global group:  [h0 h1 h2 h3]   all four must be cached
//! sliding group: [ -  -  h2 h3]  blocks 2 and 3 must be; 0 and 1 are skipped (no block)
//! ```

use super::sequence::Sequence;
use crate::kv::{chain_hash, group_key, BlockAllocator, BlockHash, BlockId, KvGroups};

/// Cached blocks a sequence can start from.
#[derive(Debug, Default)]
pub struct PrefixHit {
    /// Chain hashes of the hit blocks, in position order.
    pub hashes: Vec<BlockHash>,
    /// Per group, per hit block: the cached block, or `None` where a sliding group skips it.
    pub blocks: Vec<Vec<Option<BlockId>>>,
}

impl PrefixHit {
    pub fn num_blocks(&self) -> usize {
        self.hashes.len()
    }

    /// The cached blocks, every group's.
    pub fn cached(&self) -> impl Iterator<Item = BlockId> + '_ {
        self.blocks.iter().flatten().flatten().copied()
    }
}

/// Where the prefix cache sits for a model: its groups, their window and the block size.
#[derive(Debug, Clone, Copy)]
pub struct CacheShape {
    pub groups: KvGroups,
    pub window: Option<usize>,
    pub block_size: usize,
}

impl CacheShape {
    /// The first block a sliding group needs for a sequence whose first uncomputed position is
    /// `pos`.
    fn first_needed(&self, group: usize, pos: usize) -> usize {
        match self.window {
            Some(w) if self.groups.is_sliding(group) => {
                (pos + 1).saturating_sub(w) / self.block_size
            }
            _ => 0,
        }
    }
}

/// The longest run of cached blocks `seq` can start from (at least one token is always left to
/// compute: its logits are needed).
pub fn find(alloc: &BlockAllocator, seq: &Sequence, shape: CacheShape) -> PrefixHit {
    let bs = shape.block_size;
    let max_blocks = (seq.num_tokens() - 1) / bs;
    let groups = shape.groups.num_groups();
    // per block: its chain hash, and per group its cached block
    let mut hashes = Vec::new();
    let mut found: Vec<Vec<Option<BlockId>>> = vec![Vec::new(); groups];
    let mut parent = seq.cache_root();
    for chunk in seq.token_ids.chunks_exact(bs).take(max_blocks) {
        let hash = chain_hash(parent, chunk);
        let mut all_global = true;
        for (g, f) in found.iter_mut().enumerate() {
            let b = alloc.lookup(group_key(hash, g));
            all_global &= shape.groups.is_sliding(g) || b.is_some();
            f.push(b);
        }
        if !all_global {
            break;
        }
        hashes.push(hash);
        parent = hash;
    }
    // the most blocks whose every sliding group holds its window
    let mut k = hashes.len();
    while k > 0 && !window_cached(&found, shape, k) {
        k -= 1;
    }
    hashes.truncate(k);
    let blocks = found
        .into_iter()
        .enumerate()
        .map(|(g, mut f)| {
            f.truncate(k);
            let first = shape.first_needed(g, k * bs).min(k);
            f[..first].iter_mut().for_each(|b| *b = None);
            f
        })
        .collect();
    PrefixHit { hashes, blocks }
}

/// Whether every sliding group holds the blocks of the window of position `k * block_size`.
fn window_cached(found: &[Vec<Option<BlockId>>], shape: CacheShape, k: usize) -> bool {
    found.iter().enumerate().all(|(g, f)| {
        let first = shape.first_needed(g, k * shape.block_size);
        f[first.min(k)..k].iter().all(Option::is_some)
    })
}

/// Puts the blocks of `hits` in `seq`'s tables (a sliding group's skipped ones as entries
/// without a block), taking each from the cache.
pub fn take(alloc: &mut BlockAllocator, seq: &mut Sequence, hits: PrefixHit) {
    for (g, (table, blocks)) in seq.block_tables.iter_mut().zip(&hits.blocks).enumerate() {
        let skipped = blocks.iter().take_while(|b| b.is_none()).count();
        table.skip(skipped);
        for hash in &hits.hashes[skipped..] {
            let b = alloc
                .acquire_cached(group_key(*hash, g))
                .expect("hit was looked up this step");
            table.extend(vec![b]);
        }
    }
    seq.block_hashes.extend(hits.hashes);
}

/// Registers the full blocks of `seq` computed since the last call, in every group that still
/// holds them (`seq.block_hashes` grows by them); logs the first group's stores (the KV
/// events).
pub fn register(alloc: &mut BlockAllocator, seq: &mut Sequence, block_size: usize) {
    // (a sequence that stopped inside a step's kept drafts computed more than it keeps)
    let full = seq.num_computed_tokens.min(seq.num_tokens()) / block_size;
    while seq.block_hashes.len() < full {
        let i = seq.block_hashes.len();
        let parent = match seq.block_hashes.last() {
            Some(&h) => h,
            None => seq.cache_root(),
        };
        let tokens = &seq.token_ids[i * block_size..(i + 1) * block_size];
        let hash = chain_hash(parent, tokens);
        seq.block_hashes.push(hash);
        for (g, table) in seq.block_tables.iter().enumerate() {
            if !table.is_live(i) {
                continue;
            }
            // the events name a block of tokens once: by the first group's key
            let (block, key) = (table.blocks()[i], group_key(hash, g));
            let new = match g {
                0 => alloc.register(block, key),
                _ => alloc.register_unlogged(block, key),
            };
            let parent = (i > 0).then_some(parent);
            if new && g == 0 && parent.is_none_or(|p| alloc.lookup(p).is_some()) {
                alloc.log_stored(hash, parent, tokens);
            }
        }
    }
}
