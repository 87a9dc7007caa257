//! `BlockTable`: the blocks one sequence owns, in position order, and the slot math that maps a
//! token position to a place in the pool.
//!
//! ```text
//! block_size = 4, blocks = [7, 2]
//! position:  0  1  2  3 | 4  5  6  7
//! block:     7  7  7  7 | 2  2  2  2
//! slot:     28 29 30 31 | 8  9 10 11      slot = block * block_size + position % block_size
//! ```

use super::BlockId;

/// Index of one token's K/V row in the pool: `block * block_size + offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotId(pub u32);

#[derive(Debug, Clone, Default)]
pub struct BlockTable {
    blocks: Vec<BlockId>,
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

    pub fn blocks(&self) -> &[BlockId] {
        &self.blocks
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Empties the table, handing its blocks to the caller (who frees them).
    pub fn take(&mut self) -> Vec<BlockId> {
        std::mem::take(&mut self.blocks)
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
