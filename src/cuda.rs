//! What weir's own CUDA kernels share (feature `cuda`): the PTX that build.rs compiles from
//! `kernels/*.cu`, and access to the device buffer of a tensor an op reads beside its operands.

use candle_core::cuda_backend::cudarc::driver::{CudaSlice, DeviceRepr};
use candle_core::cuda_backend::CudaDType;
use candle_core::{Result, Storage, Tensor};

/// `kernels/paged_attention.cu`: KV write by slot, split-K paged attention of packed rows.
pub const PAGED_ATTENTION_PTX: &str =
    include_str!(concat!(env!("OUT_DIR"), "/paged_attention.ptx"));
/// `kernels/sampling.cu`: per-row sampling.
pub const SAMPLING_PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/sampling.ptx"));

/// A copy of the device buffer of `t` (a whole, contiguous tensor on the GPU), for an op that
/// reads it beside its operands (block tables, sampling parameters).
pub fn device_slice<T: CudaDType + DeviceRepr>(t: &Tensor) -> Result<CudaSlice<T>> {
    let (storage, layout) = t.storage_and_layout();
    if !layout.is_contiguous() || layout.start_offset() != 0 {
        candle_core::bail!("a kernel argument must be a whole contiguous tensor")
    }
    match &*storage {
        Storage::Cuda(s) => Ok(s.as_cuda_slice::<T>()?.clone()),
        _ => candle_core::bail!("a kernel argument must be on the GPU"),
    }
}
