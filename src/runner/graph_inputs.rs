//! What a CUDA graph of a decode step reads (`cuda_graph.rs`), as plain data so that it is
//! tested on the CPU: which bucket a step falls in, and the static input buffer of a bucket,
//! the step's rows first and padding rows after.
//!
//! ```text
//! [token ids | positions | slots | token → row | token context | block tables]   (u32)
//!   B           B           B       B             B               B × max_blocks
//! ```
//! A padding row decodes token 0 at position 0 into the scratch block's first slot and sees
//! that one key; nothing else reads or writes the scratch block.

use crate::models::batch::ForwardBatch;

/// Largest decode batch a graph is captured for.
pub const MAX_GRAPH_SEQS: usize = 512;
/// Keys per partition of the attention kernel: the smallest context bucket.
pub const PARTITION: usize = 512;

/// (rows padded to a power of two, longest context rounded up to a power of two of at least
/// one partition) of a step where every sequence decodes one token and samples it; `None`
/// for any other step, or one longer than `max_context`.
pub fn bucket(batch: &ForwardBatch, max_context: usize) -> Option<(usize, usize)> {
    let n = batch.seqs.len();
    let decode = n > 0 && batch.num_tokens() == n && batch.logits_rows.len() == n;
    if !decode || n > MAX_GRAPH_SEQS {
        return None;
    }
    let ctx = batch.seqs.iter().map(|s| s.context_len).max()?;
    if ctx > max_context {
        return None;
    }
    Some((
        n.next_power_of_two(),
        ctx.next_power_of_two().max(PARTITION),
    ))
}

/// The layout of one bucket's static buffer.
#[derive(Debug, Clone, Copy)]
pub struct GraphInputs {
    pub rows: usize,
    pub max_blocks: usize,
    pub scratch_block: u32,
    pub block_size: usize,
}

impl GraphInputs {
    pub fn len(&self) -> usize {
        5 * self.rows + self.rows * self.max_blocks
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The buffer for `batch` (its rows must fit: at most `rows`, contexts within
    /// `max_blocks`), or all padding.
    pub fn fill(&self, batch: Option<&ForwardBatch>) -> Vec<u32> {
        let (b, w) = (self.rows, self.max_blocks);
        let n = batch.map_or(0, |x| x.seqs.len());
        let mut v = vec![0u32; self.len()];
        let (head, tables) = v.split_at_mut(5 * b);
        let scratch_slot = self.scratch_block * self.block_size as u32;
        for i in 0..b {
            let row = &mut tables[i * w..(i + 1) * w];
            head[3 * b + i] = i as u32;
            match batch.filter(|_| i < n) {
                Some(x) => {
                    head[i] = x.token_ids[i];
                    head[b + i] = x.positions[i];
                    head[2 * b + i] = x.slot_mapping[i];
                    head[4 * b + i] = x.positions[i] + 1;
                    let blocks = x.block_table(i);
                    row[..blocks.len()].copy_from_slice(blocks);
                }
                None => {
                    head[2 * b + i] = scratch_slot;
                    head[4 * b + i] = 1;
                    row[0] = self.scratch_block;
                }
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::batch::SeqInput;

    fn decode_batch(contexts: &[usize], block_size: usize) -> ForwardBatch {
        let tables: Vec<Vec<u32>> = contexts
            .iter()
            .enumerate()
            .map(|(i, &c)| {
                (0..c.div_ceil(block_size) as u32)
                    .map(|b| b * 7 + i as u32)
                    .collect()
            })
            .collect();
        let tokens: Vec<[u32; 1]> = (0..contexts.len()).map(|i| [100 + i as u32]).collect();
        let inputs: Vec<SeqInput> = contexts
            .iter()
            .enumerate()
            .map(|(i, &c)| SeqInput {
                token_ids: &tokens[i],
                start: c - 1,
                block_table: &tables[i],
                sample: true,
            })
            .collect();
        ForwardBatch::build(&inputs, block_size)
    }

    #[test]
    fn decode_steps_fall_in_power_of_two_buckets() {
        assert_eq!(bucket(&decode_batch(&[5], 16), 4096), Some((1, 512)));
        assert_eq!(
            bucket(&decode_batch(&[5, 600, 9], 16), 4096),
            Some((4, 1024))
        );
        assert_eq!(bucket(&decode_batch(&[5, 600], 16), 599), None, "too long");
        // a prompt chunk is no decode step
        let chunk = ForwardBatch::build(
            &[SeqInput {
                token_ids: &[1, 2, 3],
                start: 0,
                block_table: &[0],
                sample: true,
            }],
            16,
        );
        assert_eq!(bucket(&chunk, 4096), None);
    }

    #[test]
    fn static_buffer_holds_the_rows_then_padding() {
        let batch = decode_batch(&[5, 20], 4);
        let layout = GraphInputs {
            rows: 4,
            max_blocks: 6,
            scratch_block: 99,
            block_size: 4,
        };
        let v = layout.fill(Some(&batch));
        assert_eq!(v.len(), 5 * 4 + 4 * 6);
        assert_eq!(&v[0..4], &[100, 101, 0, 0], "token ids");
        assert_eq!(&v[4..8], &[4, 19, 0, 0], "positions");
        assert_eq!(
            &v[8..12],
            &batch
                .slot_mapping
                .iter()
                .copied()
                .chain([396, 396])
                .collect::<Vec<_>>()[..]
        );
        assert_eq!(&v[12..16], &[0, 1, 2, 3], "token → row");
        assert_eq!(&v[16..20], &[5, 20, 1, 1], "keys each row sees");
        assert_eq!(&v[20..26], &[0, 7, 0, 0, 0, 0]);
        assert_eq!(&v[26..32], &[1, 8, 15, 22, 29, 0]);
        assert_eq!(
            &v[32..38],
            &[99, 0, 0, 0, 0, 0],
            "padding reads the scratch block"
        );
    }
}
