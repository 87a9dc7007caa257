//! What weir's own CUDA kernels share (feature `cuda`): the PTX that build.rs compiles from
//! `kernels/*.cu`, and access to the device buffer of a tensor an op reads beside its operands.

use candle_core::cuda_backend::cudarc::driver::CudaView;
use candle_core::cuda_backend::CudaDType;
use candle_core::{DType, Result, Storage, StorageRef, Tensor};

/// `kernels/paged_attention.cu`: KV write by slot, split-K paged attention of packed rows.
pub const PAGED_ATTENTION_PTX: &str =
    include_str!(concat!(env!("OUT_DIR"), "/paged_attention.ptx"));
/// `kernels/sampling.cu`: per-row sampling.
pub const SAMPLING_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/sampling.ptx"));
/// `kernels/fused.cu`: residual add + RMSNorm, SiLU-mul, RoPE of packed Q/K.
pub const FUSED_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/fused.ptx"));

/// The device buffer of a tensor that an op reads beside its operands (block tables, sampling
/// parameters), borrowed for one launch: the tensor's storage stays read-locked while this
/// lives, and nothing is copied (a `CudaSlice` clone would allocate and copy on the device).
/// The tensor may be a contiguous view into a larger buffer (one upload of several arrays).
pub struct DeviceArg<'a> {
    storage: StorageRef<'a>,
    range: std::ops::Range<usize>,
}

impl<'a> DeviceArg<'a> {
    /// `t` must be contiguous and on the GPU.
    pub fn new(t: &'a Tensor) -> Result<Self> {
        let (storage, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("a kernel argument must be a contiguous tensor")
        };
        if !matches!(&*storage, Storage::Cuda(_)) {
            candle_core::bail!("a kernel argument must be on the GPU")
        }
        Ok(Self {
            storage,
            range: start..end,
        })
    }

    pub fn slice<T: CudaDType>(&self) -> Result<CudaView<'_, T>> {
        match &*self.storage {
            Storage::Cuda(s) => Ok(s.as_cuda_slice::<T>()?.slice(self.range.clone())),
            _ => unreachable!("checked in DeviceArg::new"),
        }
    }
}

/// The suffix of a kernel's instantiation for `dtype` (`weir_kv_write_bf16`, ...).
pub fn kernel_suffix(dtype: DType) -> Result<&'static str> {
    match dtype {
        DType::F32 => Ok("f32"),
        DType::F16 => Ok("f16"),
        DType::BF16 => Ok("bf16"),
        other => candle_core::bail!("weir's CUDA kernels do not take {other:?}"),
    }
}
