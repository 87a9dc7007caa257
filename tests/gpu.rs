//! GPU checks: built with `--features cuda`, `#[ignore]`d (CI has no GPU) and run on a GPU
//! machine by scripts/gpu-check.sh (`gpu_tests --ignored --test-threads 1`).
//! - weir's CUDA kernels and the tensor backend on CUDA against the naive attention reference
//!   (the same random paged layouts as tests/attention_backends.rs), in f32, f16 and bf16;
//! - logits of the tiny random model on CUDA against the CPU, in f32 and bf16;
//! - SmolLM2 (dequantized to bf16) on CUDA against the CPU, when its GGUF is on the machine
//!   (WEIR_SMOLLM2_GGUF; at 98 MB it does not travel with the binaries).
#![cfg(feature = "cuda")]

use candle_core::{DType, Device, Tensor};
use weir::models::attention::cuda::CudaBackend;
use weir::models::attention::tensor::TensorBackend;
use weir::models::weights::{GgufWeights, VarBuilderWeights, WeightSource};
use weir::models::{CausalLm, Llama, LlamaConfig, WeightFormat};
use weir::testing::attention::{attention_cases, max_error};
use weir::testing::{attention_for, single_seq_batch, write_tiny_llama};

fn cuda() -> Device {
    Device::new_cuda(0).expect("a CUDA device")
}

const DTYPES: [(DType, f32); 3] = [(DType::F32, 1e-4), (DType::F16, 4e-3), (DType::BF16, 2e-2)];

#[test]
#[ignore = "needs a CUDA GPU"]
fn cuda_kernels_match_reference() {
    let dev = cuda();
    for case in attention_cases() {
        for (dtype, tol) in DTYPES {
            let backend = CudaBackend::new(case.shape, dtype, dev.clone());
            let e = max_error(&case, Box::new(backend), dtype, &dev).unwrap();
            println!(
                "cuda kernels {dtype:?} {:?} ctx {:?}: max error {e:.2e}",
                case.shape, case.context_lens
            );
            assert!(e < tol, "{case:?} {dtype:?}: {e}");
        }
    }
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn tensor_backend_on_cuda_matches_reference() {
    let dev = cuda();
    for case in attention_cases() {
        for (dtype, tol) in DTYPES {
            let backend = TensorBackend::new(case.shape, dtype, dev.clone());
            let e = max_error(&case, Box::new(backend), dtype, &dev).unwrap();
            println!(
                "tensor backend {dtype:?} {:?}: max error {e:.2e}",
                case.shape
            );
            assert!(e < tol, "{case:?} {dtype:?}: {e}");
        }
    }
}

/// Logits of a 9-token prompt then 3 decodes, on `device` in `dtype`.
fn run_model(model: &Llama, prompt: &[u32]) -> Vec<Vec<f32>> {
    let table: Vec<u32> = (0..8).rev().collect();
    let mut attn = attention_for(model, 16, 8);
    let mut out = Vec::new();
    let logits = model
        .forward(&single_seq_batch(prompt, 0, &table, 16), &mut attn)
        .unwrap();
    out.push(logits.flatten_all().unwrap().to_vec1().unwrap());
    for (i, tok) in [3u32, 100, 42].iter().enumerate() {
        let b = single_seq_batch(&[*tok], prompt.len() + i, &table, 16);
        let logits = model.forward(&b, &mut attn).unwrap();
        out.push(logits.flatten_all().unwrap().to_vec1().unwrap());
    }
    out
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
#[ignore = "needs a CUDA GPU"]
fn tiny_model_logits_match_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny_llama(dir.path(), 7);
    let files = vec![path.join("model.safetensors")];
    let text = std::fs::read_to_string(path.join("config.json")).unwrap();
    let cfg: weir::models::HfLlamaConfig = serde_json::from_str(&text).unwrap();
    let cfg = cfg.into_config().unwrap();
    let load = |dtype, dev: &Device| {
        let mut w = VarBuilderWeights::from_safetensors(&files, dtype, dev).unwrap();
        Llama::load(&mut w, cfg.clone()).unwrap()
    };
    let prompt: Vec<u32> = (0..9).map(|i| (i * 29 + 5) % 256).collect();
    let cpu = run_model(&load(DType::F32, &Device::Cpu), &prompt);
    for (dtype, tol) in [(DType::F32, 1e-3), (DType::BF16, 0.15)] {
        let gpu = run_model(&load(dtype, &cuda()), &prompt);
        let d = max_diff(&cpu, &gpu);
        println!("tiny model logits {dtype:?}: max |cuda - cpu| = {d:.3e}");
        assert!(d < tol, "{dtype:?}: {d}");
    }
}

#[test]
#[ignore = "needs a CUDA GPU and WEIR_SMOLLM2_GGUF"]
fn smollm2_logits_match_cpu() {
    let Some(path) = std::env::var_os("WEIR_SMOLLM2_GGUF") else {
        println!("WEIR_SMOLLM2_GGUF not set: SmolLM2 on CUDA not checked");
        return;
    };
    let load = |dev: &Device, dtype| {
        let mut w = GgufWeights::open_as(path.as_ref(), dev, dtype, WeightFormat::Dense).unwrap();
        let cfg = LlamaConfig::from_gguf(w.content()).unwrap();
        Llama::load(&mut w as &mut dyn WeightSource, cfg).unwrap()
    };
    let prompt: Vec<u32> = vec![504, 3575, 282, 4649, 314];
    let cpu = run_model(&load(&Device::Cpu, DType::F32), &prompt);
    let gpu = run_model(&load(&cuda(), DType::BF16), &prompt);
    let d = max_diff(&cpu, &gpu);
    let argmax = |v: &[f32]| {
        Tensor::from_slice(v, v.len(), &Device::Cpu)
            .unwrap()
            .argmax(0)
            .unwrap()
            .to_scalar::<u32>()
            .unwrap()
    };
    println!("SmolLM2 bf16 logits: max |cuda - cpu| = {d:.3e}");
    assert_eq!(
        argmax(&cpu[0]),
        argmax(&gpu[0]),
        "greedy next token differs"
    );
    assert!(d < 1.0, "{d}");
}

/// `/v1/completions` of the tiny model served on CUDA (f32) gives the CPU's greedy text.
#[test]
#[ignore = "needs a CUDA GPU"]
fn served_on_cuda_greedy_equals_cpu() {
    use weir::models::device::{DTypeSpec, DeviceSpec};
    use weir::testing::{test_limits, TestServer};
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny_llama(dir.path(), 9);
    let complete = |device| {
        let mut limits = test_limits(64, 16);
        limits.device = device;
        limits.dtype = DTypeSpec::F32;
        let server = TestServer::start(&[("tiny", &path)], limits);
        let body = serde_json::json!({"model": "tiny", "prompt": "The capital of France is",
            "max_tokens": 16, "temperature": 0, "ignore_eos": true});
        let v: serde_json::Value = reqwest::blocking::Client::new()
            .post(format!("{}/v1/completions", server.url))
            .json(&body)
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["choices"][0]["text"].as_str().unwrap().to_string()
    };
    let cpu = complete(DeviceSpec::Cpu);
    let gpu = complete(DeviceSpec::Cuda(0));
    println!("greedy over HTTP: cpu {cpu:?} cuda {gpu:?}");
    assert_eq!(cpu, gpu);
}
