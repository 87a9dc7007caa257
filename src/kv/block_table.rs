//! `BlockTable`: the blocks one sequence owns, in position order, and the slot math that maps a
//! token position to a place in the pool.
//!
//! ```text
//! block_size = 4, blocks = [7, 2]
//! position:  0  1  2  3 | 4  5  6  7
//! block:     7  7  7  7 | 2  2  2  2
//! slot:     28 29 30 31 | 8  9 10 11      slot = block * block_size + position % block_size
//! ```
//!
//! On a model whose every layer attends through a sliding window, the leading blocks that fall
//! out of the window are released (`release_before`): they keep their place in the table (the
//! slot math of later positions is unchanged) but belong to the allocator again.

use super::BlockId;

/// Index of one token's K/V row in the pool: `block * block_size + offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotId(pub u32);

#[derive(Debug, Clone, Default)]
pub struct BlockTable {
    blocks: Vec<BlockId>,
    /// The leading entries released back to the allocator (out of every layer's window).
    num_released: usize,
}

impl BlockTable {
    /// Blocks needed to hold `num_tokens` tokens.
    pub fn blocks_needed(num_tokens: usize, block_size: usize) -> usize {
        num_tokens.div_ceil(block_size)
    }

    /// Blocks to add so that the table holds `num_tokens` tokens.
    pub fn num_missing(&self, num_tokens: usize, block_size: usize) -> usize {
        Self::blocks_needed(num_tokens, block_size).saturating_sub(self.blocks.len())
    }

    pub fn extend(&mut self, blocks: Vec<BlockId>) {
        self.blocks.extend(blocks);
    }

    /// Every entry, released ones included (the prefix cache hashes them by position).
    pub fn blocks(&self) -> &[BlockId] {
        &self.blocks
    }

    /// The blocks the sequence still owns.
    pub fn live_blocks(&self) -> &[BlockId] {
        &self.blocks[self.num_released..]
    }

    /// Adds `n` entries that hold no block, as if released: positions a sliding group never
    /// reads again (before the window of a prefix-cache hit). Only before any live entry.
    pub fn skip(&mut self, n: usize) {
        assert_eq!(
            self.num_released,
            self.blocks.len(),
            "skipped entries come before every block. This is a bug."
        );
        self.blocks.extend(std::iter::repeat_n(BlockId(0), n));
        self.num_released += n;
    }

    /// Whether entry `i` holds a block of the sequence's (not released).
    pub fn is_live(&self, i: usize) -> bool {
        i >= self.num_released && i < self.blocks.len()
    }

    /// Releases the entries before index `first_kept` not released yet; returns their blocks
    /// (the caller frees them).
    pub fn release_before(&mut self, first_kept: usize) -> Vec<BlockId> {
        let end = first_kept.min(self.blocks.len());
        if end <= self.num_released {
            return Vec::new();
        }
        let freed = self.blocks[self.num_released..end].to_vec();
        self.num_released = end;
        freed
    }

    /// The table as the runner reads it: released entries point at the first live block, so
    /// a backend that gathers whole tables (and masks what is out of the window) reads only
    /// this sequence's own K/V.
    pub fn runner_ids(&self) -> Vec<u32> {
        let stand_in = self.blocks.get(self.num_released).map_or(0, |b| b.0);
        let released = std::iter::repeat_n(stand_in, self.num_released);
        released
            .chain(self.live_blocks().iter().map(|b| b.0))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Empties the table, handing the blocks it still owns to the caller (who frees them).
    pub fn take(&mut self) -> Vec<BlockId> {
        let released = std::mem::take(&mut self.num_released);
        let mut blocks = std::mem::take(&mut self.blocks);
        blocks.drain(..released);
        blocks
    }

    pub fn slot(&self, position: usize, block_size: usize) -> SlotId {
        let block = self.blocks[position / block_size];
        SlotId(block.0 * block_size as u32 + (position % block_size) as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_math_matches_diagram() {
        let mut t = BlockTable::default();
        t.extend(vec![BlockId(7), BlockId(2)]);
        let slots: Vec<u32> = (0..8).map(|p| t.slot(p, 4).0).collect();
        assert_eq!(slots, vec![28, 29, 30, 31, 8, 9, 10, 11]);
    }

    #[test]
    fn released_blocks_keep_their_place_and_are_not_taken_again() {
        let mut t = BlockTable::default();
        t.extend(vec![BlockId(7), BlockId(2), BlockId(5)]);
        assert_eq!(t.release_before(2), vec![BlockId(7), BlockId(2)]);
        assert!(t.release_before(1).is_empty());
        assert_eq!(t.live_blocks(), &[BlockId(5)]);
        assert_eq!(t.runner_ids(), vec![5, 5, 5]);
        assert_eq!(t.slot(9, 4).0, 21);
        assert_eq!(t.num_missing(13, 4), 1);
        assert_eq!(t.take(), vec![BlockId(5)]);
        assert!(t.is_empty() && t.runner_ids().is_empty());
    }

    #[test]
    fn skipped_entries_hold_no_block() {
        let mut t = BlockTable::default();
        t.skip(2);
        t.extend(vec![BlockId(4)]);
        assert!(!t.is_live(1) && t.is_live(2) && !t.is_live(3));
        assert_eq!(t.runner_ids(), vec![4, 4, 4]);
        assert_eq!(t.slot(8, 4).0, 16);
        assert_eq!(t.take(), vec![BlockId(4)]);
    }

    #[test]
    fn blocks_needed_rounds_up() {
        assert_eq!(BlockTable::blocks_needed(0, 16), 0);
        assert_eq!(BlockTable::blocks_needed(1, 16), 1);
        assert_eq!(BlockTable::blocks_needed(16, 16), 1);
        assert_eq!(BlockTable::blocks_needed(17, 16), 2);
        let mut t = BlockTable::default();
        t.extend(vec![BlockId(0)]);
        assert_eq!(t.num_missing(16, 16), 0);
        assert_eq!(t.num_missing(33, 16), 2);
    }
}
