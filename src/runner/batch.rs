//! `ForwardBatch`: the attention metadata of one step, built from the scheduler's decision with
//! plain Vec math. The model reads it; nothing here touches tensors.
//!
//! Tokens of all scheduled sequences are packed in batch order:
//! ```text
//! seq A: decode 1 token at position 9    seq B: prompt chunk of 3 tokens at positions 4..7
//! token_ids    [a9, b4, b5, b6]
//! positions    [ 9,  4,  5,  6]
//! seqs         [{query_start 0, query_len 1, context_len 10}, {query_start 1, query_len 3, context_len 7}]
//! logits_rows  [0, 3]        (the last token of each sequence that samples)
//! ```

use crate::engine::output::SchedulerOutput;
use crate::engine::request::RequestId;
use crate::engine::sequence::Sequence;

/// One sequence's slice of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchSeq {
    pub request_id: RequestId,
    /// First row of this sequence in the packed token arrays.
    pub query_start: usize,
    /// Tokens computed this step.
    pub query_len: usize,
    /// Tokens in the cache once this step's K/V are written.
    pub context_len: usize,
    /// Block ids, in position order.
    pub block_table: Vec<u32>,
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
    pub block_size: usize,
}

impl ForwardBatch {
    /// Packs the scheduled sequences. `seq` looks a sequence up by id.
    pub fn build<'a>(
        out: &SchedulerOutput,
        seq: impl Fn(RequestId) -> &'a Sequence,
        block_size: usize,
    ) -> Self {
        let mut b = ForwardBatch {
            block_size,
            ..Default::default()
        };
        for s in &out.scheduled {
            let seq = seq(s.request_id);
            let start = seq.num_computed_tokens;
            let end = start + s.num_new_tokens;
            let query_start = b.token_ids.len();
            b.token_ids.extend_from_slice(&seq.token_ids[start..end]);
            for pos in start..end {
                b.positions.push(pos as u32);
                b.slot_mapping.push(seq.block_table.slot(pos, block_size).0);
            }
            if s.sample {
                b.logits_rows.push((b.token_ids.len() - 1) as u32);
            }
            b.seqs.push(BatchSeq {
                request_id: s.request_id,
                query_start,
                query_len: s.num_new_tokens,
                context_len: end,
                block_table: seq.block_table.blocks().iter().map(|b| b.0).collect(),
                sample: s.sample,
            });
        }
        b
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::output::ScheduledSeq;
    use crate::engine::request::{Request, SamplingParams, StopConditions};
    use crate::kv::BlockId;
    use std::collections::HashMap;
    use std::time::Instant;

    fn seq(id: u64, tokens: Vec<u32>, computed: usize, blocks: &[u32]) -> Sequence {
        let mut s = Sequence::new(Request {
            id: RequestId(id),
            prompt_token_ids: tokens,
            sampling: SamplingParams::greedy(),
            stop: StopConditions::default(),
            priority: 0,
            arrival: Instant::now(),
        });
        s.num_computed_tokens = computed;
        s.block_table
            .extend(blocks.iter().map(|b| BlockId(*b)).collect());
        s
    }

    fn build(seqs: &[Sequence], sched: Vec<ScheduledSeq>) -> ForwardBatch {
        let by_id: HashMap<RequestId, &Sequence> = seqs.iter().map(|s| (s.request_id, s)).collect();
        let out = SchedulerOutput {
            scheduled: sched,
            ..Default::default()
        };
        ForwardBatch::build(&out, |id| by_id[&id], 4)
    }

    fn sched(id: u64, n: usize, sample: bool) -> ScheduledSeq {
        ScheduledSeq {
            request_id: RequestId(id),
            num_new_tokens: n,
            sample,
        }
    }

    #[test]
    fn prefill() {
        let s = [seq(1, vec![11, 12, 13, 14, 15], 0, &[3, 8])];
        let b = build(&s, vec![sched(1, 5, true)]);
        assert_eq!(b.token_ids, vec![11, 12, 13, 14, 15]);
        assert_eq!(b.positions, vec![0, 1, 2, 3, 4]);
        assert_eq!(b.slot_mapping, vec![12, 13, 14, 15, 32]);
        assert_eq!(b.logits_rows, vec![4]);
        assert_eq!(b.seqs[0].context_len, 5);
    }

    #[test]
    fn chunked_prefill_then_decode_in_one_batch() {
        // seq 1 decodes its 7th token (position 6); seq 2 computes prompt tokens 4..7 of 9
        let s = [
            seq(1, vec![1, 2, 3, 4, 5, 6, 7], 6, &[0, 5]),
            seq(2, (20..29).collect(), 4, &[1, 2]),
        ];
        let b = build(&s, vec![sched(1, 1, true), sched(2, 3, false)]);
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
        assert_eq!(b.seqs[1].block_table, vec![1, 2]);
        assert_eq!(b.token_seq_index(), vec![0, 1, 1, 1]);
    }
}
