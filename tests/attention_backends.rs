//! Every attention backend that runs on the CPU against the naive reference of
//! `weir::testing::attention` on random paged layouts (scattered block tables, chunked prompts,
//! mixed and decode-only steps, GQA 1-8, head dims 64/128, block sizes 1-32, contexts up to
//! 1,100 tokens). The CUDA backends run the same cases in tests/gpu.rs.

use candle_core::{DType, Device};
use weir::models::attention::cpu::CpuBackend;
use weir::models::attention::tensor::TensorBackend;
use weir::testing::attention::{attention_cases, max_error};

#[test]
fn cpu_backend_matches_reference() {
    for case in attention_cases() {
        let e = max_error(
            &case,
            Box::new(CpuBackend::new(case.shape)),
            DType::F32,
            &Device::Cpu,
        )
        .unwrap();
        assert!(e < 1e-5, "{case:?}: {e}");
    }
}

#[test]
fn tensor_backend_matches_reference_in_f32_and_bf16() {
    for case in attention_cases() {
        for (dtype, tol) in [(DType::F32, 1e-5), (DType::BF16, 2e-2)] {
            let backend = TensorBackend::new(case.shape, dtype, Device::Cpu);
            let e = max_error(&case, Box::new(backend), dtype, &Device::Cpu).unwrap();
            assert!(e < tol, "{case:?} {dtype:?}: {e}");
        }
    }
}
