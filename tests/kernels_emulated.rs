//! weir's CUDA kernel sources checked without a GPU: g++ compiles each `kernels/*.cu` file
//! against `kernels/emulate/cuda_emulation.h` (blocks one at a time, one std::thread per CUDA
//! thread, barriers for `__syncthreads` and warp shuffles) and a check program runs it:
//! - `check_paged_attention.cpp`: the KV write and the split-K paged attention kernels (f32)
//!   against a naive reference on random block tables, for decodes and prompt chunks packed
//!   together: GQA 1/4/8, head dims 64/128, block sizes 1/16/32, contexts up to 1,100 tokens
//!   (three partitions);
//! - `check_sampling.cpp`: greedy and top-k 1 give the argmax, top-k and top-p keep the host
//!   sampler's candidate sets, rows batched equal rows alone, seeds reproduce, and draws follow
//!   softmax(logits / temperature);
//! - `check_fused.cpp`: the residual add + RMSNorm, SiLU-mul and packed-QKV RoPE kernels of
//!   `kernels/fused.cu` against double references (interleaved and Hugging Face pairs, GQA).
//!
//! What this cannot check (the f16/bf16 instantiations, the Rust launch code, the real device)
//! tests/gpu.rs does on a GPU.

use std::process::Command;

/// Compiles and runs `kernels/emulate/{name}.cpp`; returns its report.
fn run_check(name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join(name);
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new("g++")
        .args(["-std=c++20", "-O2", "-pthread", "-o"])
        .arg(&exe)
        .arg(format!("{root}/kernels/emulate/{name}.cpp"))
        .status()
        .expect("g++ (the CPU check of the CUDA kernels needs a C++20 compiler)");
    assert!(status.success(), "g++ failed on {name}");
    let out = Command::new(&exe).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{report}");
    assert!(out.status.success(), "{name} failed:\n{report}");
    report
}

#[test]
fn paged_attention_kernels_match_reference_under_cpu_emulation() {
    let report = run_check("check_paged_attention");
    assert_eq!(report.lines().count(), 5, "{report}");
}

#[test]
fn sampling_kernel_matches_host_rules_under_cpu_emulation() {
    let report = run_check("check_sampling");
    assert!(report.contains("0 failures"), "{report}");
}

#[test]
fn fused_kernels_match_reference_under_cpu_emulation() {
    let report = run_check("check_fused");
    assert!(report.contains("\n0 failures"), "{report}");
    assert_eq!(report.lines().count(), 9, "{report}");
}
