//! `KvGroups`: how a model's layers share the block pool. A model whose layers all see the same
//! span (every layer global, or every layer through one window) has one group: a block holds
//! one block of tokens of every layer, and a sequence has one block table. A hybrid model (Gemma
//! 2/3: sliding-window layers between global ones) splits its layers into groups of equal size,
//! each of one kind, each with its own block table per sequence (vLLM's hybrid KV cache
//! manager). A block then holds `group_size` layers, and a sliding group's table releases the
//! blocks that fell out of its window while a global group's keeps every block:
//!
//! ```text
//! Gemma 3 270M: 18 layers, every 6th global (5, 11, 17): group_size 3, 6 groups
//! group 0 (global):  layers  5 11 17     storage slots 0 1 2
//! group 1 (sliding): layers  0  1  2     storage slots 0 1 2
//! ...
//! group 5 (sliding): layers 14 15 16     storage slots 0 1 2
//! ```
//!
//! Block `b` of group `g` is row block `b` of storage slots `0..group_size`, in the layers of
//! `g`: every block id means the same bytes, whatever group holds it, so one allocator serves
//! all groups. At 8k tokens with a 512-token window that is 3 × 8k + 15 × ~1k token-layers of
//! KV instead of 18 × 8k. A group with fewer layers than `group_size` leaves the rest unused.

use super::BlockHash;

/// The groups' shape: global groups first, then sliding ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvGroups {
    pub full: usize,
    pub sliding: usize,
    /// Layers per group (storage slots per block).
    pub group_size: usize,
}

impl KvGroups {
    /// One group of all `num_layers` layers (sliding when `sliding`).
    pub fn uniform(num_layers: usize, sliding: bool) -> Self {
        Self {
            full: usize::from(!sliding),
            sliding: usize::from(sliding),
            group_size: num_layers,
        }
    }

    /// The groups of a model whose layer `l` attends through `window` when `windowed[l]`.
    /// Hybrid only when it saves memory: some layers slide, some do not, and sequences can
    /// grow past the window (`max_len`); `hybrid` false (`--disable-hybrid-kv-cache-manager`)
    /// keeps one group.
    pub fn plan(windowed: &[bool], window: Option<usize>, max_len: usize, hybrid: bool) -> Self {
        let n = windowed.len();
        let sliding = if window.is_some() {
            windowed.iter().filter(|&&w| w).count()
        } else {
            0
        };
        let full = n - sliding;
        if sliding == n && n > 0 {
            return Self::uniform(n, true);
        }
        if sliding == 0 || !hybrid || window.is_some_and(|w| w >= max_len) {
            return Self::uniform(n, false);
        }
        let group_size = full.min(sliding);
        Self {
            full: full.div_ceil(group_size),
            sliding: sliding.div_ceil(group_size),
            group_size,
        }
    }

    pub fn num_groups(&self) -> usize {
        self.full + self.sliding
    }

    pub fn is_sliding(&self, group: usize) -> bool {
        group >= self.full
    }

    pub fn is_hybrid(&self) -> bool {
        self.num_groups() > 1
    }

    /// (group, storage slot) of each layer, for the model whose layer `l` slides when
    /// `windowed[l]`: each kind's layers fill their groups in layer order.
    pub fn places(&self, windowed: &[bool]) -> Vec<(usize, usize)> {
        if !self.is_hybrid() {
            return (0..windowed.len()).map(|l| (0, l)).collect();
        }
        let (mut full, mut sliding) = (0, 0);
        windowed
            .iter()
            .map(|&w| {
                let (i, first) = if w {
                    sliding += 1;
                    (sliding - 1, self.full)
                } else {
                    full += 1;
                    (full - 1, 0)
                };
                (first + i / self.group_size, i % self.group_size)
            })
            .collect()
    }

    /// Blocks one sequence of `num_tokens` tokens holds at most, when each step computes up to
    /// `step_tokens` of them and sliding groups keep `window` tokens before a step's first.
    pub fn blocks_for(
        &self,
        num_tokens: usize,
        block_size: usize,
        window: Option<usize>,
        step_tokens: usize,
    ) -> usize {
        let whole = num_tokens.div_ceil(block_size);
        let sliding = match window {
            // the window before the step's first token, the step, and a partial block at each
            // end
            Some(w) if self.sliding > 0 => whole.min((w + step_tokens).div_ceil(block_size) + 1),
            _ => whole,
        };
        self.full * whole + self.sliding * sliding
    }

    /// The longest sequence whose blocks (`blocks_for`) fit in `num_blocks`; `usize::MAX` when
    /// every length fits (every layer slides).
    pub fn max_tokens(
        &self,
        num_blocks: usize,
        block_size: usize,
        window: Option<usize>,
        step_tokens: usize,
    ) -> usize {
        let fits = |n: usize| self.blocks_for(n, block_size, window, step_tokens) <= num_blocks;
        let (mut lo, mut hi) = (0usize, 1usize << 40);
        if fits(hi) {
            return usize::MAX;
        }
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }
}

/// The prefix-cache key of a block of group `group` whose tokens chain to `hash`: the hash
/// itself in group 0 (so a one-group model's keys and KV events are the chain hashes), with
/// the group's index folded into its last bytes in the others (a block's K/V is of its own
/// group's layers only).
pub fn group_key(hash: BlockHash, group: usize) -> BlockHash {
    let mut key = hash;
    for (b, g) in key.0[28..].iter_mut().zip((group as u32).to_le_bytes()) {
        *b ^= g;
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gemma3(layers: usize) -> Vec<bool> {
        (0..layers).map(|l| (l + 1) % 6 != 0).collect()
    }

    #[test]
    fn gemma3_270m_has_one_global_and_five_sliding_groups() {
        let g = KvGroups::plan(&gemma3(18), Some(512), 32768, true);
        assert_eq!(
            g,
            KvGroups {
                full: 1,
                sliding: 5,
                group_size: 3
            }
        );
        let places = g.places(&gemma3(18));
        assert_eq!(
            &places[..7],
            &[(1, 0), (1, 1), (1, 2), (2, 0), (2, 1), (0, 0), (2, 2)]
        );
        assert_eq!(places[11], (0, 1));
        assert_eq!(places[17], (0, 2));
        assert_eq!(places[16], (5, 2));
        // every (group, slot) pair once
        let mut seen = places.clone();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 18);
    }

    #[test]
    fn uneven_counts_leave_slots_unused() {
        // Gemma 3 4B: 34 layers, 5 global
        let g = KvGroups::plan(&gemma3(34), Some(1024), 131072, true);
        assert_eq!((g.full, g.sliding, g.group_size), (1, 6, 5));
        assert!(g.places(&gemma3(34)).iter().all(|&(gr, s)| gr < 7 && s < 5));
    }

    #[test]
    fn one_group_unless_hybrid_saves_memory() {
        let all = vec![true; 4];
        assert_eq!(
            KvGroups::plan(&all, Some(8), 100, true),
            KvGroups::uniform(4, true)
        );
        let none = vec![false; 4];
        assert_eq!(
            KvGroups::plan(&none, None, 100, true),
            KvGroups::uniform(4, false)
        );
        let mixed = [true, false, true, false];
        for (window, max_len, hybrid) in [
            (None, 100, true),
            (Some(100), 100, true),
            (Some(8), 100, false),
        ] {
            assert_eq!(
                KvGroups::plan(&mixed, window, max_len, hybrid),
                KvGroups::uniform(4, false)
            );
        }
        let g = KvGroups::plan(&mixed, Some(8), 100, true);
        assert_eq!((g.full, g.sliding, g.group_size), (1, 1, 2));
        assert_eq!(g.places(&mixed), vec![(1, 0), (0, 0), (1, 1), (0, 1)]);
    }

    #[test]
    fn blocks_for_counts_the_window_once_per_sliding_group() {
        let g = KvGroups::plan(&gemma3(18), Some(512), 32768, true);
        // 8192 tokens, 16-token blocks, 512-token steps: 512 global + 5 × (1024 / 16 + 1)
        assert_eq!(g.blocks_for(8192, 16, Some(512), 512), 512 + 5 * 65);
        // short sequences: every group holds all of them
        assert_eq!(g.blocks_for(100, 16, Some(512), 512), 6 * 7);
        assert_eq!(
            KvGroups::uniform(4, false).blocks_for(100, 16, None, 512),
            7
        );
    }

    #[test]
    fn max_tokens_inverts_blocks_for() {
        let g = KvGroups::plan(&gemma3(18), Some(512), 32768, true);
        let n = g.max_tokens(1000, 16, Some(512), 512);
        assert!(g.blocks_for(n, 16, Some(512), 512) <= 1000);
        assert!(g.blocks_for(n + 1, 16, Some(512), 512) > 1000);
        assert_eq!(
            KvGroups::uniform(4, false).max_tokens(10, 16, None, 512),
            160
        );
        assert_eq!(
            KvGroups::uniform(4, true).max_tokens(100, 16, Some(512), 512),
            usize::MAX
        );
    }

    #[test]
    fn group_keys_differ_by_group_and_keep_group_0() {
        let h = BlockHash([7; 32]);
        assert_eq!(group_key(h, 0), h);
        assert_ne!(group_key(h, 1), h);
        assert_ne!(group_key(h, 1), group_key(h, 2));
    }
}
