//! CPU kernel benchmarks.
//!
//! `qgemm` runs weir's matmul kernels (`models::qgemm`) on a projection of SmolLM2's shape
//! (1536 x 576) for every weight type and instruction set, 1 to 64 rows: weights stay hot in
//! cache, so this is the kernel's compute rate; `glu` is the fused gate + up + SiLU pass of the
//! MLP on two such weights and `quantize` the activation rows' Q8 quantization alone. Q4_K and Q6_K (`qgemm_1536x512_kquants`) need
//! whole 256-weight super-blocks, which 576 inputs are not. `decode_step` runs one whole forward
//! pass of the default model (SmolLM2-135M Q4_1) for B sequences decoding at context 128, per
//! weight format; `prefill_step` one forward pass over 128 to 2048 prompt tokens, and over one
//! long prompt.
//!
//! `cargo bench --bench kernels`

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Duration;
use weir::models::attention::Attention;
use weir::models::batch::{ForwardBatch, SeqInput};
use weir::models::linear::WeightFormat;
use weir::models::qgemm::activations::QuantRows;
use weir::models::qgemm::{matmul_glu, Isa, PackedWeight, QuantKind};
use weir::models::weights::{GgufWeights, WeightSource};
use weir::models::{CausalLm, Llama, LlamaConfig};

fn qgemm(c: &mut Criterion) {
    weir::models::pool::init_cpu_threads();
    let dev = Device::Cpu;
    let (out_dim, in_dim) = (1536, 576);
    let w = Tensor::randn(0f32, 0.02, (out_dim, in_dim), &dev).unwrap();
    let packed = |dtype, kind| {
        let qt = QTensor::quantize(&w, dtype).unwrap();
        PackedWeight::from_ggml(kind, &qt.data().unwrap(), out_dim, in_dim)
    };
    let dense: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    let weights = [
        ("q4_0", packed(GgmlDType::Q4_0, QuantKind::Q4_0)),
        ("q4_1", packed(GgmlDType::Q4_1, QuantKind::Q4_1)),
        ("q8_0", packed(GgmlDType::Q8_0, QuantKind::Q8_0)),
        ("f32", PackedWeight::from_f32(&dense, out_dim, in_dim)),
    ];
    let mut g = c.benchmark_group("qgemm_1536x576");
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_millis(800));
    for (name, pw) in &weights {
        for &isa in Isa::available() {
            if isa == Isa::Portable && *name != "q4_1" {
                continue; // the portable path is a reference; one type shows its speed
            }
            for rows in [1usize, 4, 8, 16, 32, 64] {
                let x: Vec<f32> = Tensor::randn(0f32, 1.0, (rows, in_dim), &dev)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                g.throughput(Throughput::Elements((rows * out_dim * in_dim) as u64));
                let id = BenchmarkId::new(format!("{name}/{isa:?}"), rows);
                g.bench_with_input(id, &x, |b, x| b.iter(|| pw.matmul_on(isa, x, rows)));
            }
        }
    }
    g.finish();
    // the gated MLP's gate + up + SiLU in one pass, and the activation quantization alone
    let mut g = c.benchmark_group("glu_2x1536x576_and_quantize");
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_millis(800));
    let up = packed(GgmlDType::Q4_1, QuantKind::Q4_1);
    let gate = &weights[1].1;
    for rows in [1usize, 8, 64] {
        let x: Vec<f32> = Tensor::randn(0f32, 1.0, (rows, in_dim), &dev)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        g.throughput(Throughput::Elements((2 * rows * out_dim * in_dim) as u64));
        g.bench_with_input(BenchmarkId::new("glu/q4_1", rows), &x, |b, x| {
            b.iter(|| matmul_glu(gate, &up, x, rows))
        });
        g.throughput(Throughput::Elements((rows * in_dim) as u64));
        g.bench_with_input(BenchmarkId::new("quantize", rows), &x, |b, x| {
            b.iter(|| QuantRows::quantize(x, rows, in_dim))
        });
    }
    g.finish();
    // K-quants need whole 256-weight super-blocks: a 1536 x 512 projection
    let in_k = 512;
    let wk = Tensor::randn(0f32, 0.02, (out_dim, in_k), &dev).unwrap();
    let mut g = c.benchmark_group("qgemm_1536x512_kquants");
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_millis(800));
    for (name, dtype, kind) in [
        ("q4_k", GgmlDType::Q4K, QuantKind::Q4K),
        ("q6_k", GgmlDType::Q6K, QuantKind::Q6K),
    ] {
        let qt = QTensor::quantize(&wk, dtype).unwrap();
        let pw = PackedWeight::from_ggml(kind, &qt.data().unwrap(), out_dim, in_k);
        for rows in [1usize, 8, 64] {
            let x: Vec<f32> = Tensor::randn(0f32, 1.0, (rows, in_k), &dev)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            g.throughput(Throughput::Elements((rows * out_dim * in_k) as u64));
            let id = BenchmarkId::new(format!("{name}/{:?}", Isa::best()), rows);
            g.bench_with_input(id, &x, |b, x| b.iter(|| pw.matmul(x, rows)));
        }
    }
    g.finish();
}

/// A batch of `b` decodes, sequence i at position `ctx` with its own 128/16 + 1 blocks.
fn decode_batch(b: usize, ctx: usize, block_size: usize) -> ForwardBatch {
    let per_seq = ctx / block_size + 1;
    let tables: Vec<Vec<u32>> = (0..b)
        .map(|i| (0..per_seq).map(|j| (i * per_seq + j) as u32).collect())
        .collect();
    let tokens: Vec<[u32; 1]> = (0..b).map(|i| [100 + i as u32]).collect();
    let inputs: Vec<SeqInput> = (0..b)
        .map(|i| SeqInput {
            token_ids: &tokens[i],
            start: ctx,
            block_table: &tables[i],
            sample: true,
        })
        .collect();
    ForwardBatch::build(&inputs, block_size)
}

/// A batch of `n` prompts of `len` tokens each, computed from position 0 (one prefill chunk per
/// sequence), every sequence with its own blocks; only the last token of each is sampled.
fn prefill_batch(n: usize, len: usize, block_size: usize) -> ForwardBatch {
    let per_seq = len.div_ceil(block_size);
    let tables: Vec<Vec<u32>> = (0..n)
        .map(|i| (0..per_seq).map(|j| (i * per_seq + j) as u32).collect())
        .collect();
    let tokens: Vec<Vec<u32>> = (0..n)
        .map(|i| {
            (0..len)
                .map(|p| 100 + ((i * len + p) % 9000) as u32)
                .collect()
        })
        .collect();
    let inputs: Vec<SeqInput> = (0..n)
        .map(|i| SeqInput {
            token_ids: &tokens[i],
            start: 0,
            block_table: &tables[i],
            sample: true,
        })
        .collect();
    ForwardBatch::build(&inputs, block_size)
}

fn load_default_model(format: WeightFormat) -> (Llama, LlamaConfig) {
    let path = weir::testing::default_model_path();
    let mut w = GgufWeights::open(&path, &Device::Cpu, format).unwrap();
    let cfg = LlamaConfig::from_gguf(w.content()).unwrap();
    let model = Llama::load(&mut w as &mut dyn WeightSource, cfg.clone()).unwrap();
    (model, cfg)
}

fn kv_cache(model: &Llama, num_blocks: usize) -> Attention {
    weir::testing::attention_for(model, 16, num_blocks)
}

/// Prompt tokens per step: what `--max-num-batched-tokens` trades against step latency. Prompts of
/// 128 tokens, 1 to 16 of them in one step (the default quantized weights).
fn prefill_step(c: &mut Criterion) {
    weir::models::pool::init_cpu_threads();
    let mut g = c.benchmark_group("prefill_step_smollm2_128_token_prompts");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(4));
    g.sample_size(10);
    let (model, _) = load_default_model(WeightFormat::Quantized);
    let mut kv = kv_cache(&model, 16 * 8);
    for n in [1usize, 2, 4, 8, 16] {
        let batch = prefill_batch(n, 128, 16);
        g.throughput(Throughput::Elements((n * 128) as u64));
        g.bench_with_input(
            BenchmarkId::new("tokens", n * 128),
            &batch,
            |bench, batch| bench.iter(|| model.forward(batch, &mut kv).unwrap()),
        );
    }
    // one long prompt: attention grows with the square of its length
    let mut kv = kv_cache(&model, 16 * 8 * 2);
    for len in [512usize, 1024] {
        let batch = prefill_batch(1, len, 16);
        g.throughput(Throughput::Elements(len as u64));
        g.bench_with_input(
            BenchmarkId::new("one_prompt", len),
            &batch,
            |bench, batch| bench.iter(|| model.forward(batch, &mut kv).unwrap()),
        );
    }
    // a 512-token chunk of a long prompt (chunked prefill's step) after `start` cached tokens
    let mut kv = kv_cache(&model, 8192 / 16);
    let table: Vec<u32> = (0..8192 / 16).collect();
    let tokens: Vec<u32> = (0..512).map(|i| 100 + i).collect();
    for start in [0usize, 1536, 3584, 7680] {
        let input = SeqInput {
            token_ids: &tokens,
            start,
            block_table: &table,
            sample: true,
        };
        let batch = ForwardBatch::build(&[input], 16);
        g.throughput(Throughput::Elements(512));
        g.bench_with_input(
            BenchmarkId::new("chunk_512_after", start),
            &batch,
            |bench, batch| bench.iter(|| model.forward(batch, &mut kv).unwrap()),
        );
    }
    g.finish();
}

fn decode_step(c: &mut Criterion) {
    weir::models::pool::init_cpu_threads();
    let mut g = c.benchmark_group("decode_step_smollm2_ctx128");
    g.warm_up_time(Duration::from_millis(500));
    g.measurement_time(Duration::from_secs(3));
    g.sample_size(10);
    let formats = [
        ("quantized", WeightFormat::Quantized),
        ("dense_f32", WeightFormat::Dense),
    ];
    for (name, format) in formats {
        let (model, _) = load_default_model(format);
        let mut kv = kv_cache(&model, 64 * 9);
        for b in [1usize, 2, 4, 8, 16, 32, 64] {
            let batch = decode_batch(b, 128, 16);
            g.throughput(Throughput::Elements(b as u64));
            g.bench_with_input(BenchmarkId::new(name, b), &batch, |bench, batch| {
                bench.iter(|| model.forward(batch, &mut kv).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, qgemm, decode_step, prefill_step);
criterion_main!(benches);
