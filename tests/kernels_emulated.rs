//! weir's CUDA kernel source (`kernels/paged_attention.cu`) checked without a GPU: g++ compiles
//! the same file against `kernels/emulate/cuda_emulation.h` (blocks one at a time, one
//! std::thread per CUDA thread, barriers for `__syncthreads` and warp shuffles) and
//! `kernels/emulate/check_paged_attention.cpp` runs the KV write and the split-K paged decode
//! kernels (f32) against a naive reference on random block tables: GQA 1/4/8, head dims 64/128,
//! block sizes 1/16/32, contexts up to 1,100 tokens (three partitions). What this cannot check
//! (the f16/bf16 instantiations, the Rust launch code, the real device) tests/gpu.rs does on a GPU.

use std::process::Command;

#[test]
fn paged_attention_kernels_match_reference_under_cpu_emulation() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("check_paged_attention");
    let root = env!("CARGO_MANIFEST_DIR");
    let status = Command::new("g++")
        .args(["-std=c++20", "-O2", "-pthread", "-o"])
        .arg(&exe)
        .arg(format!("{root}/kernels/emulate/check_paged_attention.cpp"))
        .status()
        .expect("g++ (the CPU check of the CUDA kernels needs a C++20 compiler)");
    assert!(status.success(), "g++ failed on the kernel source");
    let out = Command::new(&exe).output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(out.status.success(), "kernel output differs from the reference:\n{report}");
    assert_eq!(report.lines().count(), 4, "{report}");
}
