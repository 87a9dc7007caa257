//! Sampling on the GPU (feature `cuda`): `kernels/sampling.cu` picks every row's token where the
//! logits are (greedy, temperature, top-k, top-p, seeded Gumbel-max), so only token ids cross to
//! the host. A row's token depends only on its logits and its parameters, never on the batch.

use crate::cuda::{DeviceArg, SAMPLING_PTX};
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::WrapErr;
use candle_core::{CpuStorage, CudaStorage, CustomOp1, Layout, Result, Shape, Tensor};

/// One row's sampling parameters.
#[derive(Debug, Clone, Copy)]
pub struct RowParams {
    /// 0: greedy.
    pub temperature: f32,
    /// 0: all tokens.
    pub top_k: u32,
    pub top_p: f32,
    /// The draw's seed (from the request's own RNG).
    pub seed: u64,
}

/// SAMPLE_THREADS in the .cu file.
const THREADS: u32 = 1024;

/// The rows' parameters in one u32 buffer, uploaded at once: [seeds (2 words each, first, so
/// they stay 8-byte aligned) | temperature (f32 bits) | top_k | top_p (f32 bits)]. The kernel
/// takes typed pointers into it.
struct Sample {
    /// [5 * rows] u32
    params: Tensor,
}

impl CustomOp1 for Sample {
    fn name(&self) -> &'static str {
        "weir-sample"
    }

    fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("weir-sample is a CUDA kernel; the CPU samples on the host")
    }

    fn cuda_fwd(&self, logits: &CudaStorage, layout: &Layout) -> Result<(CudaStorage, Shape)> {
        let Some((o0, o1)) = layout.contiguous_offsets() else {
            candle_core::bail!("weir-sample: logits must be contiguous")
        };
        let (rows, vocab) = layout.shape().dims2()?;
        let dev = logits.device().clone();
        let x = logits.as_cuda_slice::<f32>()?.slice(o0..o1);
        let params = DeviceArg::new(&self.params)?;
        let all = params.slice::<u32>()?;
        if all.len() != 5 * rows {
            candle_core::bail!("weir-sample: {} parameter words for {rows} rows", all.len())
        }
        let (seeds, t, k, p) = (
            all.slice(0..2 * rows),
            all.slice(2 * rows..3 * rows),
            all.slice(3 * rows..4 * rows),
            all.slice(4 * rows..5 * rows),
        );
        // SAFETY: the kernel writes one token per row.
        let out = unsafe { dev.alloc::<u32>(rows)? };
        let func = dev.get_or_load_custom_func("weir_sample_f32", "weir_sampling", SAMPLING_PTX)?;
        let vocab = vocab as u32;
        let mut b = func.builder();
        b.arg(&x);
        b.arg(&vocab);
        b.arg(&t);
        b.arg(&k);
        b.arg(&p);
        b.arg(&seeds);
        b.arg(&out);
        let cfg = LaunchConfig {
            grid_dim: (rows as u32, 1, 1),
            block_dim: (THREADS, 1, 1),
            shared_mem_bytes: 0,
        };
        // SAFETY: one block per row of a [rows, vocab] f32 buffer; every parameter has rows
        // elements; out has rows elements.
        unsafe { b.launch(cfg) }.w()?;
        Ok((CudaStorage::wrap_cuda_slice(out, dev), Shape::from(rows)))
    }
}

/// The rows' parameters in `Sample`'s layout, uploaded to `device` (one copy).
pub fn upload(params: &[RowParams], device: &candle_core::Device) -> Result<Tensor> {
    let n = params.len();
    let mut words = Vec::with_capacity(5 * n);
    words.extend(
        params
            .iter()
            .flat_map(|p| [p.seed as u32, (p.seed >> 32) as u32]),
    );
    words.extend(params.iter().map(|p| p.temperature.to_bits()));
    words.extend(params.iter().map(|p| p.top_k));
    words.extend(params.iter().map(|p| p.top_p.to_bits()));
    Tensor::from_vec(words, 5 * n, device)
}

/// One token per row of `logits` ([rows, vocab] f32 on a CUDA device) with the rows'
/// parameters from `upload`.
pub fn sample(logits: &Tensor, params: &Tensor) -> Result<Vec<u32>> {
    let op = Sample {
        params: params.clone(),
    };
    logits
        .to_dtype(candle_core::DType::F32)?
        .contiguous()?
        .apply_op1_no_bwd(&op)?
        .to_vec1::<u32>()
}
