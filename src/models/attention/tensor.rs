//! The tensor attention backend: KV pools as candle tensors in the model's dtype on any device,
//! and attention built only from candle's own tested ops, so it is right the first time it runs
//! on a GPU. It is the CUDA path (weir's kernels replace parts of it where they measure faster)
//! and it runs on CPU in CI against the host reference.
//!
//! Per step, `prepare` uploads the metadata once and plans the gather:
//! ```text
//! batch rows   [d0 | p0 p1 p2 | d1]           d: decode rows, p: one prompt chunk
//! groups       decode {rows [0, 4], S = 2, C = longest context}, prompt {rows [1, 2, 3], S = 1}
//! row_order    rows of the concatenated group outputs [d0 d1 p0 p1 p2] in batch order: [0, 2, 3, 4, 1]
//! ```
//! Per layer and group: K/V of every visible slot are gathered with `index_select` into
//! `[S, kv_heads, C, head_dim]`, scores `q Kᵀ` and `softmax` run in f32 with a 0/-inf mask
//! (causal for prompt chunks, padding for decodes), and `P V` gives the output. GQA: the
//! `group` query heads of a KV head are rows of one matmul against that head's K.

use super::{AttentionBackend, AttentionMetadata, AttentionShape};
use crate::kv::cache::{KvCache, KvCacheConfig, LayerKv};
use crate::models::batch::ForwardBatch;
use candle_core::{DType, Device, Result, Tensor, D};

/// Device copies of the step's metadata: views into one buffer, uploaded at once (each copy
/// from pageable host memory costs the host a driver call and waits for the stream).
pub struct DeviceMetadata {
    /// [num_tokens] u32 cache slot of each token
    pub slot_mapping: Tensor,
    /// [num_seqs, max_blocks] u32, padded with 0
    pub block_tables: Tensor,
    /// [num_tokens] u32 each token's sequence (its row of `block_tables`)
    pub token_seq: Tensor,
    /// [num_tokens] u32 keys each token sees: its position + 1
    pub token_context_lens: Tensor,
    /// What the candle-op path needs; `None` when the backend runs its own kernels.
    gather: Option<GatherPlan>,
}

impl DeviceMetadata {
    /// Metadata for weir's kernels (`CudaBackend`) from tensors already on the device: a CUDA
    /// graph's static buffers, rewritten before each replay.
    pub fn for_kernels(
        slot_mapping: Tensor,
        block_tables: Tensor,
        token_seq: Tensor,
        token_context_lens: Tensor,
    ) -> AttentionMetadata {
        AttentionMetadata {
            token_seq: Vec::new(),
            groups: Vec::new(),
            device: Some(Self {
                slot_mapping,
                block_tables,
                token_seq,
                token_context_lens,
                gather: None,
            }),
        }
    }
}

/// The candle-op path's plan for one step.
struct GatherPlan {
    /// [num_tokens, kv_dim] u32: `slot_mapping` repeated along each row (the scatter index)
    slot_index: Tensor,
    groups: Vec<Group>,
    /// [num_tokens] u32 row of each batch token in the concatenated group outputs; `None` when
    /// the groups already cover the rows in order.
    row_order: Option<Tensor>,
}

/// Sequences attended by one batched matmul: all decodes together, or one prompt chunk.
struct Group {
    /// [num_seqs * query_len] u32 batch rows of the group's queries
    rows: Tensor,
    /// [num_seqs * ctx] u32 slot of every visible key, padded with slot 0 (masked)
    slots: Tensor,
    /// [num_seqs, 1, group * query_len, ctx] f32: 0 where visible, -inf elsewhere
    mask: Tensor,
    /// `mask` for the sliding-window layers (also -inf before each query's window), when the
    /// model has them.
    window_mask: Option<Tensor>,
    num_seqs: usize,
    query_len: usize,
    ctx: usize,
}

pub struct TensorBackend {
    shape: AttentionShape,
    dtype: DType,
    device: Device,
}

impl TensorBackend {
    pub fn new(shape: AttentionShape, dtype: DType, device: Device) -> Self {
        Self {
            shape,
            dtype,
            device,
        }
    }

    fn u32s(&self, v: Vec<u32>) -> Result<Tensor> {
        let n = v.len();
        Tensor::from_vec(v, n, &self.device)
    }

    /// The gather plan of `seqs` (indices into `batch.seqs`, all with the same `query_len`).
    /// `like`: the same sequences' group in another KV group's plan, whose masks (which depend
    /// on positions only) this one shares.
    fn group(
        &self,
        batch: &ForwardBatch,
        seqs: &[usize],
        query_len: usize,
        like: Option<&Group>,
    ) -> Result<Group> {
        let bs = batch.block_size;
        let g = self.shape.group();
        let ctx = seqs
            .iter()
            .map(|&i| batch.seqs[i].context_len)
            .max()
            .unwrap_or(0);
        let rows_per_seq = g * query_len;
        let mut rows = Vec::with_capacity(seqs.len() * query_len);
        let mut slots = vec![0u32; seqs.len() * ctx];
        let masks = like.is_none();
        let mut mask = match masks {
            true => vec![f32::NEG_INFINITY; seqs.len() * rows_per_seq * ctx],
            false => Vec::new(),
        };
        let windowed = masks && self.shape.sliding_window.is_some();
        let mut window_mask = if windowed { mask.clone() } else { Vec::new() };
        for (n, &i) in seqs.iter().enumerate() {
            let s = &batch.seqs[i];
            rows.extend((s.query_start..s.query_start + query_len).map(|r| r as u32));
            for (j, slot) in slots[n * ctx..n * ctx + s.context_len]
                .iter_mut()
                .enumerate()
            {
                *slot = crate::models::batch::slot(batch.block_table(i), j, bs);
            }
            if !masks {
                continue;
            }
            let first_pos = s.context_len - query_len;
            // mask row r is (query head h within the group, query i) with i = r % query_len
            let seq_rows = n * rows_per_seq * ctx..(n + 1) * rows_per_seq * ctx;
            for (r, row) in mask[seq_rows.clone()].chunks_exact_mut(ctx).enumerate() {
                let visible = first_pos + r % query_len + 1;
                row[..visible].fill(0.0);
            }
            if windowed {
                let rows = window_mask[seq_rows].chunks_exact_mut(ctx);
                for (r, row) in rows.enumerate() {
                    let pos = first_pos + r % query_len;
                    row[self.shape.first_visible(pos, true)..=pos].fill(0.0);
                }
            }
        }
        let mask_shape = (seqs.len(), 1, rows_per_seq, ctx);
        let (mask, window_mask) = match like {
            Some(g) => (g.mask.clone(), g.window_mask.clone()),
            None => (
                Tensor::from_vec(mask, mask_shape, &self.device)?,
                match windowed {
                    true => Some(Tensor::from_vec(window_mask, mask_shape, &self.device)?),
                    false => None,
                },
            ),
        };
        Ok(Group {
            rows: self.u32s(rows)?,
            slots: self.u32s(slots)?,
            mask,
            window_mask,
            num_seqs: seqs.len(),
            query_len,
            ctx,
        })
    }

    /// Attention of one group. q: [num_tokens, q_dim] (f32) → [num_seqs * query_len, q_dim].
    fn attend_group(
        &self,
        k_pool: &Tensor,
        v_pool: &Tensor,
        q: &Tensor,
        g: &Group,
        windowed: bool,
    ) -> Result<Tensor> {
        let AttentionShape {
            num_kv_heads: kvh,
            head_dim: d,
            ..
        } = self.shape;
        let group = self.shape.group();
        let (s, ql, ctx) = (g.num_seqs, g.query_len, g.ctx);
        // [S, kvh, group * ql, d]: row (h, i) of KV head k is query i, head k * group + h
        let q = q
            .index_select(&g.rows, 0)?
            .reshape((s, ql, kvh, group, d))?
            .permute((0, 2, 3, 1, 4))?
            .contiguous()?
            .reshape((s, kvh, group * ql, d))?;
        // [S, kvh, ctx, d]
        let gather = |pool: &Tensor| -> Result<Tensor> {
            pool.index_select(&g.slots, 0)?
                .to_dtype(DType::F32)?
                .reshape((s, ctx, kvh, d))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (k, v) = (gather(k_pool)?, gather(v_pool)?);
        let scale = self.shape.softmax_scale as f64;
        let mask = match (&g.window_mask, windowed) {
            (Some(w), true) => w,
            _ => &g.mask,
        };
        let mut scores = (q.matmul(&k.transpose(2, 3)?)? * scale)?;
        if let Some(cap) = self.shape.logit_softcap {
            let cap = cap as f64;
            scores = ((scores / cap)?.tanh()? * cap)?;
        }
        let scores = scores.broadcast_add(mask)?;
        let p = candle_nn::ops::softmax_last_dim(&scores)?;
        p.matmul(&v)? // [S, kvh, group * ql, d]
            .reshape((s, kvh, group, ql, d))?
            .permute((0, 3, 1, 2, 4))?
            .contiguous()?
            .reshape((s * ql, self.shape.q_dim()))
    }

    /// The step's metadata on the device; `with_gather_plan` adds what the candle-op path needs
    /// (the CUDA backend's own kernels only read the plain tables). `like`: the metadata of
    /// another KV group of the same step, whose masks the plan shares.
    pub(super) fn metadata(
        &self,
        batch: &ForwardBatch,
        with_gather_plan: bool,
        like: Option<&AttentionMetadata>,
    ) -> Result<AttentionMetadata> {
        let (t, s, w) = (batch.num_tokens(), batch.seqs.len(), batch.max_blocks());
        // [slot_mapping | token_seq | token_context_lens | block_tables]
        let mut host = Vec::with_capacity(3 * t + s * w);
        host.extend_from_slice(&batch.slot_mapping);
        host.extend(batch.token_seq_index());
        host.extend(batch.positions.iter().map(|p| p + 1));
        host.extend(batch.padded_block_tables());
        let all = self.u32s(host)?;
        let slot_mapping = all.narrow(0, 0, t)?;
        let like = match like {
            Some(m) => device_meta(m)?.gather.as_ref(),
            None => None,
        };
        let gather = if with_gather_plan {
            Some(self.gather_plan(batch, &slot_mapping, like)?)
        } else {
            None
        };
        Ok(AttentionMetadata {
            token_seq: Vec::new(),
            groups: Vec::new(),
            device: Some(DeviceMetadata {
                slot_mapping,
                token_seq: all.narrow(0, t, t)?,
                token_context_lens: all.narrow(0, 2 * t, t)?,
                block_tables: all.narrow(0, 3 * t, s * w)?.reshape((s, w))?,
                gather,
            }),
        })
    }

    fn gather_plan(
        &self,
        batch: &ForwardBatch,
        slot_mapping: &Tensor,
        like: Option<&GatherPlan>,
    ) -> Result<GatherPlan> {
        let like = |k: usize| like.and_then(|p| p.groups.get(k));
        let t = batch.num_tokens();
        let slot_index = slot_mapping
            .reshape((t, 1))?
            .broadcast_as((t, self.shape.kv_dim()))?
            .contiguous()?;
        let decodes: Vec<usize> = (0..batch.seqs.len())
            .filter(|&i| batch.seqs[i].query_len == 1)
            .collect();
        let mut groups = Vec::new();
        let mut order = Vec::with_capacity(t); // batch rows in concatenated output order
        if !decodes.is_empty() {
            groups.push(self.group(batch, &decodes, 1, like(groups.len()))?);
            order.extend(decodes.iter().map(|&i| batch.seqs[i].query_start));
        }
        for (i, s) in batch.seqs.iter().enumerate() {
            if s.query_len > 1 {
                groups.push(self.group(batch, &[i], s.query_len, like(groups.len()))?);
                order.extend(s.query_start..s.query_start + s.query_len);
            }
        }
        let in_order = order.iter().enumerate().all(|(i, &r)| i == r);
        let row_order = if in_order {
            None
        } else {
            let mut inverse = vec![0u32; t];
            for (i, &r) in order.iter().enumerate() {
                inverse[r] = i as u32;
            }
            Some(self.u32s(inverse)?)
        };
        Ok(GatherPlan {
            slot_index,
            groups,
            row_order,
        })
    }
}

pub(super) fn device_pools(kv: &LayerKv) -> Result<(&Tensor, &Tensor)> {
    match kv {
        LayerKv::Device { k, v } => Ok((k, v)),
        LayerKv::Host { .. } => candle_core::bail!("the tensor backend needs a tensor KV pool"),
    }
}

pub(super) fn device_meta(meta: &AttentionMetadata) -> Result<&DeviceMetadata> {
    meta.device
        .as_ref()
        .ok_or_else(|| candle_core::Error::Msg("tensor backend metadata missing".into()))
}

fn gather_plan(meta: &AttentionMetadata) -> Result<&GatherPlan> {
    device_meta(meta)?.gather.as_ref().ok_or_else(|| {
        candle_core::Error::Msg("the step was prepared without a gather plan".into())
    })
}

impl AttentionBackend for TensorBackend {
    fn kind(&self) -> super::BackendKind {
        super::BackendKind::Tensor
    }

    fn allocate(&self, cfg: KvCacheConfig) -> Result<KvCache> {
        KvCache::new_device(cfg, self.dtype, &self.device)
    }

    fn prepare(&self, batch: &ForwardBatch) -> Result<AttentionMetadata> {
        self.metadata(batch, true, None)
    }

    fn prepare_like(
        &self,
        batch: &ForwardBatch,
        like: &AttentionMetadata,
    ) -> Result<AttentionMetadata> {
        self.metadata(batch, true, Some(like))
    }

    fn write_kv(
        &self,
        kv: &mut LayerKv,
        k: &Tensor,
        v: &Tensor,
        _batch: &ForwardBatch,
        meta: &AttentionMetadata,
    ) -> Result<()> {
        let (k_pool, v_pool) = device_pools(kv)?;
        let idx = &gather_plan(meta)?.slot_index;
        k_pool.scatter_set(idx, &k.to_dtype(self.dtype)?.contiguous()?, 0)?;
        v_pool.scatter_set(idx, &v.to_dtype(self.dtype)?.contiguous()?, 0)
    }

    fn attend(
        &self,
        kv: &LayerKv,
        q: &Tensor,
        _batch: &ForwardBatch,
        meta: &AttentionMetadata,
        windowed: bool,
    ) -> Result<Tensor> {
        let (k_pool, v_pool) = device_pools(kv)?;
        let m = gather_plan(meta)?;
        let qf = q.to_dtype(DType::F32)?;
        let outs = m
            .groups
            .iter()
            .map(|g| self.attend_group(k_pool, v_pool, &qf, g, windowed))
            .collect::<Result<Vec<_>>>()?;
        let y = match outs.len() {
            1 => outs.into_iter().next().expect("one group"),
            _ => Tensor::cat(&outs, 0)?,
        };
        let y = match &m.row_order {
            Some(order) => y.index_select(order, 0)?,
            None => y,
        };
        debug_assert_eq!(y.dim(D::Minus1)?, self.shape.q_dim());
        y.to_dtype(q.dtype())
    }
}
