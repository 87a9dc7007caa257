//! The CUDA attention backend: weir's own kernels (`kernels/paged_attention.cu`, compiled to PTX
//! by build.rs) launched as candle custom ops, over the same tensor pools and metadata as
//! `TensorBackend`.
//! - `write_kv`: one kernel writes every token's K (then V) row to its slot, in place.
//! - `attend`: split-K paged attention over every token of the step, decodes and prompt chunks
//!   alike (`weir_paged_attention_partial` + `weir_paged_attention_reduce`: one row per token
//!   seeing its own sequence's keys `0..=pos` through the block table, 512-key partitions, each
//!   K/V row read once per GQA group, f32 accumulation). Shapes beyond the kernel's shared
//!   memory (GQA group > 8, head dim > 256) run the tensor backend's candle-op path.
//!
//! Every kernel is checked against the tensor backend and the CPU reference by the GPU tests
//! (`tests/gpu.rs`, run by `scripts/gpu-check.sh`).

use super::tensor::{device_meta, device_pools, TensorBackend};
use super::{AttentionBackend, AttentionMetadata, AttentionShape};
use crate::kv::cache::{KvCache, KvCacheConfig, LayerKv};
use crate::models::batch::ForwardBatch;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
use candle_core::{
    CpuStorage, CudaStorage, CustomOp3, DType, Device, InplaceOp3, Layout, Result, Shape, Tensor,
};

use crate::cuda::{kernel_suffix as suffix, DeviceArg, PAGED_ATTENTION_PTX as PTX};

const MODULE: &str = "weir_paged_attention";
/// Keys per partition of the split-K attention kernel (PARTITION in the .cu file).
const PARTITION: usize = 512;
/// Limits of the attention kernel's shared memory (MAX_GROUP, MAX_HEAD_DIM in the .cu file).
const MAX_GROUP: usize = 8;
const MAX_HEAD_DIM: usize = 256;
const THREADS: u32 = 128;

fn cpu_only(name: &str) -> Result<()> {
    candle_core::bail!("{name} is a CUDA kernel; the CPU runs the other backends")
}

/// `pool[slots[t]] = src[t]` for every row t, in place. pool: [num_slots, width],
/// src: [num_tokens, width], slots: [num_tokens] u32.
struct KvWrite;

impl InplaceOp3 for KvWrite {
    fn name(&self) -> &'static str {
        "weir-kv-write"
    }

    fn cpu_fwd(
        &self,
        _: &mut CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<()> {
        cpu_only(self.name())
    }

    fn cuda_fwd(
        &self,
        pool: &mut CudaStorage,
        pool_l: &Layout,
        src: &CudaStorage,
        src_l: &Layout,
        slots: &CudaStorage,
        slots_l: &Layout,
    ) -> Result<()> {
        if !pool_l.is_contiguous() || pool_l.start_offset() != 0 {
            candle_core::bail!("weir-kv-write: the pool must be a whole contiguous tensor")
        }
        let (Some((s0, s1)), Some((i0, i1))) =
            (src_l.contiguous_offsets(), slots_l.contiguous_offsets())
        else {
            candle_core::bail!("weir-kv-write: src and slots must be contiguous")
        };
        let (tokens, width) = src_l.shape().dims2()?;
        let dev = pool.device().clone();
        let name = format!("weir_kv_write_{}", suffix(pool.dtype())?);
        let func = dev.get_or_load_custom_func(&name, MODULE, PTX)?;
        let slots = slots.as_cuda_slice::<u32>()?.slice(i0..i1);
        let cfg = LaunchConfig {
            grid_dim: (tokens as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        let width = width as u32;
        macro_rules! launch {
            ($p:expr, $s:expr) => {{
                let src = $s.slice(s0..s1);
                let mut b = func.builder();
                b.arg($p);
                b.arg(&src);
                b.arg(&slots);
                b.arg(&width);
                // SAFETY: shapes checked above; slots index rows of the pool (the scheduler
                // only hands out slots of allocated blocks).
                unsafe { b.launch(cfg) }.w()?;
            }};
        }
        match (&mut pool.slice, &src.slice) {
            (CudaStorageSlice::F32(p), CudaStorageSlice::F32(s)) => launch!(p, s),
            (CudaStorageSlice::F16(p), CudaStorageSlice::F16(s)) => launch!(p, s),
            (CudaStorageSlice::BF16(p), CudaStorageSlice::BF16(s)) => launch!(p, s),
            _ => candle_core::bail!("weir-kv-write: pool and src dtypes differ"),
        }
        Ok(())
    }
}

/// Paged attention of packed query rows: q [num_tokens, q_dim] with the pools as the other two
/// operands; block tables, each row's sequence and context length ride in the op.
struct PagedAttention {
    shape: AttentionShape,
    block_size: usize,
    /// [num_rows, max_blocks] u32
    block_tables: Tensor,
    /// [num_tokens] u32
    row_seq: Tensor,
    /// [num_tokens] u32
    row_ctx: Tensor,
    max_context_len: usize,
}

impl CustomOp3 for PagedAttention {
    fn name(&self) -> &'static str {
        "weir-paged-attention"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        cpu_only(self.name())?;
        unreachable!()
    }

    fn cuda_fwd(
        &self,
        q: &CudaStorage,
        q_l: &Layout,
        k: &CudaStorage,
        k_l: &Layout,
        v: &CudaStorage,
        v_l: &Layout,
    ) -> Result<(CudaStorage, Shape)> {
        let (Some((q0, q1)), true, true) = (
            q_l.contiguous_offsets(),
            k_l.is_contiguous() && k_l.start_offset() == 0,
            v_l.is_contiguous() && v_l.start_offset() == 0,
        ) else {
            candle_core::bail!("weir-paged-attention: q and the pools must be contiguous")
        };
        let (num_rows, q_dim) = q_l.shape().dims2()?;
        let s = self.shape;
        let parts = self.max_context_len.div_ceil(PARTITION).max(1);
        let dev = q.device().clone();
        let sfx = suffix(q.dtype())?;
        let args = [&self.block_tables, &self.row_seq, &self.row_ctx].map(DeviceArg::new);
        let [tables, row_seq, row_ctx] = args;
        let (tables, row_seq, row_ctx) = (tables?, row_seq?, row_ctx?);
        let (tables, row_seq, row_ctx) = (
            tables.slice::<u32>()?,
            row_seq.slice::<u32>()?,
            row_ctx.slice::<u32>()?,
        );
        let max_blocks = self.block_tables.dim(1)? as u32;
        let heads = num_rows * s.num_heads;
        // SAFETY: the partial kernel writes every element, empty partitions included.
        let (part_max, part_sum, part_out) = unsafe {
            (
                dev.alloc::<f32>(heads * parts)?,
                dev.alloc::<f32>(heads * parts)?,
                dev.alloc::<f32>(heads * parts * s.head_dim)?,
            )
        };
        let partial = dev.get_or_load_custom_func(
            &format!("weir_paged_attention_partial_{sfx}"),
            MODULE,
            PTX,
        )?;
        let reduce = dev.get_or_load_custom_func(
            &format!("weir_paged_attention_reduce_{sfx}"),
            MODULE,
            PTX,
        )?;
        let (kvh, group, d, bs) = (
            s.num_kv_heads as u32,
            s.group() as u32,
            s.head_dim as u32,
            self.block_size as u32,
        );
        let scale = s.softmax_scale;
        let num_parts = parts as u32;
        macro_rules! run {
            ($ty:ty, $q:expr, $k:expr, $v:expr, $wrap:path) => {{
                let q = $q.slice(q0..q1);
                let mut b = partial.builder();
                b.arg(&q);
                b.arg($k);
                b.arg($v);
                b.arg(&tables);
                b.arg(&row_seq);
                b.arg(&row_ctx);
                b.arg(&part_max);
                b.arg(&part_sum);
                b.arg(&part_out);
                b.arg(&kvh);
                b.arg(&group);
                b.arg(&d);
                b.arg(&bs);
                b.arg(&max_blocks);
                b.arg(&scale);
                let cfg = LaunchConfig {
                    grid_dim: (num_rows as u32, kvh, num_parts),
                    block_dim: (THREADS, 1, 1),
                    shared_mem_bytes: 0,
                };
                // SAFETY: shapes checked by the caller (`CudaBackend::attend`); block tables
                // cover every context position.
                unsafe { b.launch(cfg) }.w()?;
                // SAFETY: every element is written by the reduce kernel below.
                let out = unsafe { dev.alloc::<$ty>(num_rows * q_dim)? };
                let mut b = reduce.builder();
                b.arg(&part_max);
                b.arg(&part_sum);
                b.arg(&part_out);
                b.arg(&out);
                b.arg(&num_parts);
                b.arg(&d);
                let cfg = LaunchConfig {
                    grid_dim: (num_rows as u32, s.num_heads as u32, 1),
                    block_dim: (d.min(THREADS), 1, 1),
                    shared_mem_bytes: 0,
                };
                // SAFETY: out is [num_rows, num_heads, head_dim].
                unsafe { b.launch(cfg) }.w()?;
                $wrap(out)
            }};
        }
        let slice = match (&q.slice, &k.slice, &v.slice) {
            (CudaStorageSlice::F32(q), CudaStorageSlice::F32(k), CudaStorageSlice::F32(v)) => {
                run!(f32, q, k, v, CudaStorageSlice::F32)
            }
            (CudaStorageSlice::F16(q), CudaStorageSlice::F16(k), CudaStorageSlice::F16(v)) => {
                run!(half::f16, q, k, v, CudaStorageSlice::F16)
            }
            (CudaStorageSlice::BF16(q), CudaStorageSlice::BF16(k), CudaStorageSlice::BF16(v)) => {
                run!(half::bf16, q, k, v, CudaStorageSlice::BF16)
            }
            _ => candle_core::bail!("weir-paged-attention: q and pool dtypes differ"),
        };
        Ok((
            CudaStorage { slice, device: dev },
            Shape::from((num_rows, q_dim)),
        ))
    }
}

/// weir's kernels where they apply, the tensor backend elsewhere.
pub struct CudaBackend {
    shape: AttentionShape,
    dtype: DType,
    fallback: TensorBackend,
}

impl CudaBackend {
    pub fn new(shape: AttentionShape, dtype: DType, device: Device) -> Self {
        Self {
            shape,
            dtype,
            fallback: TensorBackend::new(shape, dtype, device),
        }
    }

    /// Whether the attention kernel's shared memory holds this model's shape.
    /// NOTE: sliding-window and soft-capped models run the tensor backend's attention (its
    /// window mask, its tanh) until the kernel learns a first visible key and a cap.
    fn kernel_fits(&self) -> bool {
        self.shape.group() <= MAX_GROUP
            && self.shape.head_dim <= MAX_HEAD_DIM
            && self.shape.sliding_window.is_none()
            && self.shape.logit_softcap.is_none()
    }
}

impl AttentionBackend for CudaBackend {
    fn kind(&self) -> super::BackendKind {
        super::BackendKind::Cuda
    }

    fn allocate(&self, cfg: KvCacheConfig) -> Result<KvCache> {
        self.fallback.allocate(cfg)
    }

    fn prepare(&self, batch: &ForwardBatch) -> Result<AttentionMetadata> {
        self.fallback.metadata(batch, !self.kernel_fits(), None)
    }

    fn prepare_like(
        &self,
        batch: &ForwardBatch,
        like: &AttentionMetadata,
    ) -> Result<AttentionMetadata> {
        self.fallback
            .metadata(batch, !self.kernel_fits(), Some(like))
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
        let slots = &device_meta(meta)?.slot_mapping;
        k_pool.inplace_op3(&k.to_dtype(self.dtype)?.contiguous()?, slots, &KvWrite)?;
        v_pool.inplace_op3(&v.to_dtype(self.dtype)?.contiguous()?, slots, &KvWrite)
    }

    fn attend(
        &self,
        kv: &LayerKv,
        q: &Tensor,
        batch: &ForwardBatch,
        meta: &AttentionMetadata,
        windowed: bool,
    ) -> Result<Tensor> {
        if !self.kernel_fits() {
            return self.fallback.attend(kv, q, batch, meta, windowed);
        }
        let (k_pool, v_pool) = device_pools(kv)?;
        let m = device_meta(meta)?;
        let op = PagedAttention {
            shape: self.shape,
            block_size: batch.block_size,
            block_tables: m.block_tables.clone(),
            row_seq: m.token_seq.clone(),
            row_ctx: m.token_context_lens.clone(),
            max_context_len: batch.seqs.iter().map(|s| s.context_len).max().unwrap_or(1),
        };
        q.to_dtype(self.dtype)?
            .contiguous()?
            .apply_op3_no_bwd(k_pool, v_pool, &op)?
            .to_dtype(q.dtype())
    }
}
