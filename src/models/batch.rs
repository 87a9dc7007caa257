//! `ForwardBatch`: the model's input for one step, packed from per-sequence slices with plain
//! Vec math. It belongs to the models (it is what `CausalLm::forward` reads); the runner builds
//! it from the scheduler's output. Attention backends turn it into device metadata once per step
//! (`attention::AttentionMetadata`).
//!
//! Tokens of all scheduled sequences are packed in batch order:
//! ```text
//! seq A: decode 1 token at position 9    seq B: prompt chunk of 3 tokens at positions 4..7
//! token_ids    [a9, b4, b5, b6]
//! positions    [ 9,  4,  5,  6]
//! seqs         [{query_start 0, query_len 1, context_len 10}, {query_start 1, query_len 3, context_len 7}]
//! logits_rows  [0, 3]        (the last token of each sequence that samples)
//! ```

/// The cache slot of position `pos` of a sequence whose blocks are `block_table`.
///
/// ```text
/// block_table [5, 2], block_size 4:   pos 0..4 → slots 20..24,   pos 4..8 → slots 8..12
/// ```
#[inline]
pub fn slot(block_table: &[u32], pos: usize, block_size: usize) -> u32 {
    block_table[pos / block_size] * block_size as u32 + (pos % block_size) as u32
}

/// What the model needs of one sequence for one step.
#[derive(Debug, Clone, Copy)]
pub struct SeqInput<'a> {
    /// Tokens computed this step, at positions `start..start + token_ids.len()`.
    pub token_ids: &'a [u32],
    /// Tokens already in the cache (the position of `token_ids[0]`).
    pub start: usize,
    /// Block ids in position order; covers at least `start + token_ids.len()` tokens.
    pub block_table: &'a [u32],
    /// Whether the last token's logits are returned (to sample).
    pub sample: bool,
}

/// One sequence's slice of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSeq {
    /// First row of this sequence in the packed token arrays.
    pub query_start: usize,
    /// Tokens computed this step.
    pub query_len: usize,
    /// Tokens in the cache once this step's K/V are written.
    pub context_len: usize,
    /// This sequence's block ids (in position order, the blocks its context covers) in
    /// `ForwardBatch::block_ids`: `ForwardBatch::block_table`.
    pub blocks: std::ops::Range<usize>,
    /// Whether the last row's logits are sampled.
    pub sample: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ForwardBatch {
    /// [num_tokens]
    pub token_ids: Vec<u32>,
    /// [num_tokens] absolute position of each token in its sequence
    pub positions: Vec<u32>,
    /// [num_tokens] cache slot each token's K/V is written to
    pub slot_mapping: Vec<u32>,
    /// [num_seqs]
    pub seqs: Vec<BatchSeq>,
    /// [num_sampled] rows whose logits the model returns, in batch order
    pub logits_rows: Vec<u32>,
    /// Every sequence's block table, one after the other (`BatchSeq::blocks`).
    pub block_ids: Vec<u32>,
    pub block_size: usize,
    /// The token rows of each LoRA adapter in the step, by adapter index (ascending); rows of
    /// the base model are in none.
    pub lora_rows: Vec<(u32, Vec<u32>)>,
    /// A hybrid model's KV groups after the first (`kv::KvGroups`): the same tokens, with each
    /// group's own block tables and slots. Empty for a model with one group.
    pub kv_groups: Vec<ForwardBatch>,
}

impl ForwardBatch {
    /// Packs `seqs` in order.
    pub fn build(seqs: &[SeqInput<'_>], block_size: usize) -> Self {
        let tokens: usize = seqs.iter().map(|s| s.token_ids.len()).sum();
        let mut b = ForwardBatch {
            token_ids: Vec::with_capacity(tokens),
            positions: Vec::with_capacity(tokens),
            slot_mapping: Vec::with_capacity(tokens),
            seqs: Vec::with_capacity(seqs.len()),
            block_size,
            ..Default::default()
        };
        for s in seqs {
            let end = s.start + s.token_ids.len();
            let query_start = b.token_ids.len();
            b.token_ids.extend_from_slice(s.token_ids);
            for pos in s.start..end {
                b.positions.push(pos as u32);
                b.slot_mapping.push(slot(s.block_table, pos, block_size));
            }
            if s.sample {
                b.logits_rows.push((b.token_ids.len() - 1) as u32);
            }
            let first_block = b.block_ids.len();
            b.block_ids
                .extend_from_slice(&s.block_table[..end.div_ceil(block_size)]);
            b.seqs.push(BatchSeq {
                query_start,
                query_len: s.token_ids.len(),
                context_len: end,
                blocks: first_block..b.block_ids.len(),
                sample: s.sample,
            });
        }
        b
    }

    /// Sets `lora_rows` from each sequence's adapter (`adapters[i]` of `seqs[i]`).
    pub fn set_loras(&mut self, adapters: impl IntoIterator<Item = Option<u32>>) {
        let mut by_adapter: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
        for (s, a) in self.seqs.iter().zip(adapters) {
            if let Some(a) = a {
                let rows = s.query_start as u32..(s.query_start + s.query_len) as u32;
                by_adapter.entry(a).or_default().extend(rows);
            }
        }
        self.lora_rows = by_adapter.into_iter().collect();
    }

    /// The batch of KV group `group` (0: this one).
    pub fn kv_group(&self, group: usize) -> &ForwardBatch {
        match group {
            0 => self,
            g => &self.kv_groups[g - 1],
        }
    }

    /// Block ids of sequence `i` (the blocks its context covers), in position order.
    pub fn block_table(&self, i: usize) -> &[u32] {
        &self.block_ids[self.seqs[i].blocks.clone()]
    }

    pub fn num_tokens(&self) -> usize {
        self.token_ids.len()
    }

    /// For each token row, the index of its sequence in `seqs`. [num_tokens]
    pub fn token_seq_index(&self) -> Vec<u32> {
        let mut v = Vec::with_capacity(self.num_tokens());
        for (i, s) in self.seqs.iter().enumerate() {
            v.extend(std::iter::repeat_n(i as u32, s.query_len));
        }
        v
    }

    /// Longest block table of the batch (the padded width of `[num_seqs, max_blocks]`).
    pub fn max_blocks(&self) -> usize {
        self.seqs.iter().map(|s| s.blocks.len()).max().unwrap_or(0)
    }

    /// Block tables padded with 0 to `[num_seqs, max_blocks]`, row-major.
    pub fn padded_block_tables(&self) -> Vec<u32> {
        let width = self.max_blocks();
        let mut v = vec![0u32; self.seqs.len() * width];
        for (row, s) in v.chunks_exact_mut(width.max(1)).zip(&self.seqs) {
            row[..s.blocks.len()].copy_from_slice(&self.block_ids[s.blocks.clone()]);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(tokens: &'a [u32], start: usize, table: &'a [u32], sample: bool) -> SeqInput<'a> {
        SeqInput {
            token_ids: tokens,
            start,
            block_table: table,
            sample,
        }
    }

    #[test]
    fn prefill() {
        let b = ForwardBatch::build(&[input(&[11, 12, 13, 14, 15], 0, &[3, 8], true)], 4);
        assert_eq!(b.token_ids, vec![11, 12, 13, 14, 15]);
        assert_eq!(b.positions, vec![0, 1, 2, 3, 4]);
        assert_eq!(b.slot_mapping, vec![12, 13, 14, 15, 32]);
        assert_eq!(b.logits_rows, vec![4]);
        assert_eq!(b.seqs[0].context_len, 5);
    }

    #[test]
    fn chunked_prefill_then_decode_in_one_batch() {
        // seq 1 decodes its 7th token (position 6); seq 2 computes prompt tokens 4..7 of 9
        let b = ForwardBatch::build(
            &[
                input(&[7], 6, &[0, 5], true),
                input(&[24, 25, 26], 4, &[1, 2, 9], false),
            ],
            4,
        );
        assert_eq!(b.token_ids, vec![7, 24, 25, 26]);
        assert_eq!(b.positions, vec![6, 4, 5, 6]);
        assert_eq!(b.slot_mapping, vec![22, 8, 9, 10]);
        assert_eq!(
            b.logits_rows,
            vec![0],
            "a chunk that does not reach the end samples nothing"
        );
        assert_eq!(b.seqs[1].query_start, 1);
        assert_eq!(b.seqs[1].context_len, 7);
        assert_eq!(
            b.block_table(1),
            [1, 2],
            "only the blocks the context covers"
        );
        assert_eq!(b.token_seq_index(), vec![0, 1, 1, 1]);
    }

    #[test]
    fn device_metadata_vectors() {
        let b = ForwardBatch::build(
            &[
                input(&[7], 6, &[0, 5], true),
                input(&[1, 2, 3], 0, &[4], true),
                input(&[9], 8, &[6, 7, 3], true),
            ],
            4,
        );
        // [num_seqs, max_blocks] = [3, 3], padded with 0
        assert_eq!(b.max_blocks(), 3);
        assert_eq!(b.padded_block_tables(), vec![0, 5, 0, 4, 0, 0, 6, 7, 3]);
        let starts: Vec<usize> = b.seqs.iter().map(|s| s.query_start).collect();
        assert_eq!(starts, vec![0, 1, 4]);
        let context_lens: Vec<usize> = b.seqs.iter().map(|s| s.context_len).collect();
        assert_eq!(context_lens, vec![7, 3, 9]);
        assert_eq!(b.logits_rows, vec![0, 3, 4]);
    }
}
