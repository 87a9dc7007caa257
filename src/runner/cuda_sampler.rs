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

struct Sample {
    /// [rows] f32
    temperature: Tensor,
    /// [rows] u32
    top_k: Tensor,
    /// [rows] f32
    top_p: Tensor,
    /// [rows] i64 (the bits of the u64 seeds)
    seeds: Tensor,
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
        let args = [&self.temperature, &self.top_k, &self.top_p, &self.seeds].map(DeviceArg::new);
        let [t, k, p, seeds] = args;
        let (t, k, p, seeds) = (t?, k?, p?, seeds?);
        let (t, k, p, seeds) = (
            t.slice::<f32>()?,
            k.slice::<u32>()?,
            p.slice::<f32>()?,
            seeds.slice::<i64>()?,
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

/// One token per row of `logits` ([params.len(), vocab] f32 on a CUDA device).
pub fn sample(logits: &Tensor, params: &[RowParams]) -> Result<Vec<u32>> {
    let dev = logits.device();
    let n = params.len();
    let col = |f: &dyn Fn(&RowParams) -> f32| {
        Tensor::from_vec(params.iter().map(f).collect::<Vec<_>>(), n, dev)
    };
    let op = Sample {
        temperature: col(&|p| p.temperature)?,
        top_k: Tensor::from_vec(params.iter().map(|p| p.top_k).collect::<Vec<_>>(), n, dev)?,
        top_p: col(&|p| p.top_p)?,
        seeds: Tensor::from_vec(
            params.iter().map(|p| p.seed as i64).collect::<Vec<_>>(),
            n,
            dev,
        )?,
    };
    logits
        .to_dtype(candle_core::DType::F32)?
        .contiguous()?
        .apply_op1_no_bwd(&op)?
        .to_vec1::<u32>()
}
