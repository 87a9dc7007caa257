//! The Llama layer's fused element-wise steps. With `kernel` on a CUDA device each is one launch
//! of `kernels/fused.cu`; elsewhere (the CPU, or `--no-fused-kernels`) the candle ops it
//! replaces, which are also what the GPU tests compare the kernels against.
//!
//! - `add_rms_norm`: the residual add and the next RMSNorm (`x + a`, then `rms_norm`).
//! - `silu_mul`: the gated MLP's `silu(gate) * up` from one GEMM over the merged gate/up weight.
//! - `rope_qkv` (`Rope::apply_qkv`, in rope.rs): RoPE of q and k and the split of v, from one
//!   GEMM over the merged q/k/v weight.

use candle_core::{Result, Tensor};
use candle_nn::ops::rms_norm;

/// (`x + a`, `rms_norm(x + a) * w`). x, a: [rows, width]; w: [width].
pub fn add_rms_norm(
    x: &Tensor,
    a: &Tensor,
    w: &Tensor,
    eps: f32,
    kernel: bool,
) -> Result<(Tensor, Tensor)> {
    #[cfg(feature = "cuda")]
    if kernel && x.device().is_cuda() && x.dim(0)? > 0 {
        let out =
            x.contiguous()?
                .apply_op3_no_bwd(&a.contiguous()?, w, &cuda::AddRmsNorm { eps })?;
        return Ok((out.get(0)?, out.get(1)?));
    }
    let _ = kernel;
    let x = (x + a)?;
    let h = rms_norm(&x, w, eps)?;
    Ok((x, h))
}

/// `silu(gu[:, ..I]) * gu[:, I..]` for gu: [rows, 2 * I] → [rows, I].
pub fn silu_mul(gu: &Tensor, kernel: bool) -> Result<Tensor> {
    let (rows, width) = gu.dims2()?;
    let inter = width / 2;
    #[cfg(feature = "cuda")]
    if kernel && gu.device().is_cuda() && rows > 0 {
        return gu.contiguous()?.apply_op1_no_bwd(&cuda::SiluMul);
    }
    let _ = (kernel, rows);
    gu.narrow(1, 0, inter)?.silu()? * gu.narrow(1, inter, inter)?
}

#[cfg(feature = "cuda")]
pub(crate) mod cuda {
    use crate::cuda::{kernel_suffix, DeviceArg, FUSED_PTX};
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::cudarc::driver::{LaunchConfig, PushKernelArg};
    use candle_core::cuda_backend::{CudaStorageSlice, WrapErr};
    use candle_core::Tensor;
    use candle_core::{CpuStorage, CudaStorage, CustomOp1, CustomOp3, Layout, Result, Shape};

    const MODULE: &str = "weir_fused";
    /// NORM_THREADS in the .cu file.
    const NORM_THREADS: u32 = 256;
    const THREADS: u32 = 256;

    fn cpu_only(name: &str) -> Result<(CpuStorage, Shape)> {
        candle_core::bail!("{name} is a CUDA kernel; the CPU runs the candle ops it fuses")
    }

    fn contiguous(l: &Layout, what: &str) -> Result<(usize, usize)> {
        l.contiguous_offsets()
            .ok_or_else(|| candle_core::Error::Msg(format!("{what} must be contiguous")))
    }

    /// out [2, rows, width]: the sum, then its RMSNorm.
    pub struct AddRmsNorm {
        pub eps: f32,
    }

    impl CustomOp3 for AddRmsNorm {
        fn name(&self) -> &'static str {
            "weir-add-rms-norm"
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
            cpu_only(self.name())
        }

        fn cuda_fwd(
            &self,
            x: &CudaStorage,
            x_l: &Layout,
            a: &CudaStorage,
            a_l: &Layout,
            w: &CudaStorage,
            w_l: &Layout,
        ) -> Result<(CudaStorage, Shape)> {
            let (x0, x1) = contiguous(x_l, "weir-add-rms-norm: x")?;
            let (a0, a1) = contiguous(a_l, "weir-add-rms-norm: a")?;
            let (w0, w1) = contiguous(w_l, "weir-add-rms-norm: w")?;
            let (rows, width) = x_l.shape().dims2()?;
            if a_l.shape() != x_l.shape() || w_l.shape().elem_count() != width {
                candle_core::bail!("weir-add-rms-norm: shapes {x_l:?} {a_l:?} {w_l:?}")
            }
            let dev = x.device().clone();
            let name = format!("weir_add_rms_norm_{}", kernel_suffix(x.dtype())?);
            let func = dev.get_or_load_custom_func(&name, MODULE, FUSED_PTX)?;
            let cfg = LaunchConfig {
                grid_dim: (rows as u32, 1, 1),
                block_dim: (NORM_THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let (rows_u, width_u) = (rows as u32, width as u32);
            macro_rules! run {
                ($ty:ty, $x:expr, $a:expr, $w:expr, $wrap:path) => {{
                    // SAFETY: the kernel writes both halves of every row.
                    let out = unsafe { dev.alloc::<$ty>(2 * rows * width)? };
                    let (x, a, w) = ($x.slice(x0..x1), $a.slice(a0..a1), $w.slice(w0..w1));
                    let mut b = func.builder();
                    b.arg(&x);
                    b.arg(&a);
                    b.arg(&w);
                    b.arg(&out);
                    b.arg(&rows_u);
                    b.arg(&width_u);
                    b.arg(&self.eps);
                    // SAFETY: one block per row of [rows, width] inputs, shapes checked above.
                    unsafe { b.launch(cfg) }.w()?;
                    $wrap(out)
                }};
            }
            use CudaStorageSlice as S;
            let slice = match (&x.slice, &a.slice, &w.slice) {
                (S::F32(x), S::F32(a), S::F32(w)) => run!(f32, x, a, w, S::F32),
                (S::F16(x), S::F16(a), S::F16(w)) => run!(half::f16, x, a, w, S::F16),
                (S::BF16(x), S::BF16(a), S::BF16(w)) => run!(half::bf16, x, a, w, S::BF16),
                _ => candle_core::bail!("weir-add-rms-norm: x, a and w dtypes differ"),
            };
            Ok((
                CudaStorage { slice, device: dev },
                Shape::from((2, rows, width)),
            ))
        }
    }

    /// [rows, 2 I] → [rows, I].
    pub struct SiluMul;

    impl CustomOp1 for SiluMul {
        fn name(&self) -> &'static str {
            "weir-silu-mul"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            cpu_only(self.name())
        }

        fn cuda_fwd(&self, gu: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
            let (o0, o1) = contiguous(l, "weir-silu-mul: gu")?;
            let (rows, width) = l.shape().dims2()?;
            let inter = width / 2;
            let dev = gu.device().clone();
            let name = format!("weir_silu_mul_{}", kernel_suffix(gu.dtype())?);
            let func = dev.get_or_load_custom_func(&name, MODULE, FUSED_PTX)?;
            let n = rows * inter;
            let cfg = LaunchConfig {
                grid_dim: (n.div_ceil(THREADS as usize).clamp(1, 65_535) as u32, 1, 1),
                block_dim: (THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            let (rows_u, inter_u) = (rows as u32, inter as u32);
            macro_rules! run {
                ($ty:ty, $gu:expr, $wrap:path) => {{
                    // SAFETY: the grid-stride loop writes every element.
                    let out = unsafe { dev.alloc::<$ty>(n)? };
                    let gu = $gu.slice(o0..o1);
                    let mut b = func.builder();
                    b.arg(&gu);
                    b.arg(&out);
                    b.arg(&rows_u);
                    b.arg(&inter_u);
                    // SAFETY: gu holds rows * 2 * inter elements, out rows * inter.
                    unsafe { b.launch(cfg) }.w()?;
                    $wrap(out)
                }};
            }
            use CudaStorageSlice as S;
            let slice = match &gu.slice {
                S::F32(g) => run!(f32, g, S::F32),
                S::F16(g) => run!(half::f16, g, S::F16),
                S::BF16(g) => run!(half::bf16, g, S::BF16),
                _ => candle_core::bail!("weir-silu-mul: unsupported dtype"),
            };
            Ok((
                CudaStorage { slice, device: dev },
                Shape::from((rows, inter)),
            ))
        }
    }

    /// qkv [T, (H + 2 KvH) D] → [T H D | T KvH D | T KvH D] (flat): q and k rotated by
    /// their token's position ([T] u32) times inv_freq ([D/2] f32), v copied.
    pub struct RopeQkv {
        pub positions: Tensor,
        pub inv_freq: Tensor,
        pub num_heads: usize,
        pub num_kv_heads: usize,
        pub interleaved: bool,
    }

    impl CustomOp1 for RopeQkv {
        fn name(&self) -> &'static str {
            "weir-rope-qkv"
        }

        fn cpu_fwd(&self, _: &CpuStorage, _: &Layout) -> Result<(CpuStorage, Shape)> {
            cpu_only(self.name())
        }

        fn cuda_fwd(&self, qkv: &CudaStorage, l: &Layout) -> Result<(CudaStorage, Shape)> {
            let (o0, o1) = contiguous(l, "weir-rope-qkv: qkv")?;
            let (tokens, width) = l.shape().dims2()?;
            let heads = self.num_heads + 2 * self.num_kv_heads;
            let d = width / heads;
            let half = self.inv_freq.elem_count();
            if self.positions.elem_count() != tokens || 2 * half != d {
                candle_core::bail!(
                    "weir-rope-qkv: {} positions, {half} frequencies for {tokens} tokens of head dim {d}",
                    self.positions.elem_count()
                )
            }
            let (pos, inv) = (
                DeviceArg::new(&self.positions)?,
                DeviceArg::new(&self.inv_freq)?,
            );
            let (pos, inv) = (pos.slice::<u32>()?, inv.slice::<f32>()?);
            let dev = qkv.device().clone();
            let name = format!("weir_rope_qkv_{}", kernel_suffix(qkv.dtype())?);
            let func = dev.get_or_load_custom_func(&name, MODULE, FUSED_PTX)?;
            let cfg = LaunchConfig {
                grid_dim: (tokens as u32, heads as u32, 1),
                block_dim: ((half as u32).clamp(1, 128), 1, 1),
                shared_mem_bytes: 0,
            };
            let (nh, nkv, d_u) = (self.num_heads as u32, self.num_kv_heads as u32, d as u32);
            let inter = u32::from(self.interleaved);
            macro_rules! run {
                ($ty:ty, $x:expr, $wrap:path) => {{
                    // SAFETY: one block per (token, head) writes that head's row of q, k or v.
                    let out = unsafe { dev.alloc::<$ty>(tokens * width)? };
                    let x = $x.slice(o0..o1);
                    let mut b = func.builder();
                    b.arg(&x);
                    b.arg(&out);
                    b.arg(&pos);
                    b.arg(&inv);
                    b.arg(&nh);
                    b.arg(&nkv);
                    b.arg(&d_u);
                    b.arg(&inter);
                    // SAFETY: shapes checked above.
                    unsafe { b.launch(cfg) }.w()?;
                    $wrap(out)
                }};
            }
            use CudaStorageSlice as S;
            let slice = match &qkv.slice {
                S::F32(x) => run!(f32, x, S::F32),
                S::F16(x) => run!(half::f16, x, S::F16),
                S::BF16(x) => run!(half::bf16, x, S::BF16),
                _ => candle_core::bail!("weir-rope-qkv: unsupported dtype"),
            };
            Ok((
                CudaStorage { slice, device: dev },
                Shape::from(tokens * width),
            ))
        }
    }
}
