//! The paged attention path against an independent contiguous reference: candle-transformers'
//! own Llama (plain KV cache, masks, repeat_kv) on the same tiny random weights. Logits must agree
//! within 1e-4 for a prompt, a chunked prompt, and decodes, with blocks scattered in the pool.
//! Each check runs with both attention backends: the host CPU reference and the tensor backend
//! (candle ops, the CUDA path), here on the CPU in f32. In bf16 the model takes the GPU's
//! layout (dense weights, q/k/v and gate/up merged into one GEMM each), checked against the
//! same f32 reference within bf16's rounding.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::llama as reference;
use weir::kv::KvCacheConfig;
use weir::models::attention::cpu::CpuBackend;
use weir::models::attention::tensor::TensorBackend;
use weir::models::attention::{Attention, AttentionBackend};
use weir::models::batch::{ForwardBatch, SeqInput};
use weir::models::weights::VarBuilderWeights;
use weir::models::{CausalLm, Llama, LlamaConfig, Model};
use weir::testing::{packed_batch, single_seq_batch, tiny_llama_config_json, tiny_llama_weights};

const BLOCK: usize = 4;
/// Deliberately out of order: position p lives in block TABLE[p / 4].
const TABLE: [u32; 8] = [5, 2, 9, 0, 7, 3, 11, 1];

fn weir_model() -> Llama {
    let weights = tiny_llama_weights(1);
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let cfg = LlamaConfig::from_hf(&tiny_llama_config_json()).unwrap();
    let mut w = VarBuilderWeights::new(vb);
    Llama::load(&mut w, cfg).unwrap()
}

fn reference_model() -> (reference::Llama, reference::Cache) {
    let weights = tiny_llama_weights(1);
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let cfg: reference::LlamaConfig = serde_json::from_value(tiny_llama_config_json()).unwrap();
    let cfg = cfg.into_config(false);
    let cache = reference::Cache::new(true, DType::F32, &cfg, &Device::Cpu).unwrap();
    (reference::Llama::load(vb, &cfg).unwrap(), cache)
}

#[derive(Debug, Clone, Copy)]
enum Backend {
    Cpu,
    Tensor,
}

const BACKENDS: [Backend; 2] = [Backend::Cpu, Backend::Tensor];

/// A 12-block pool of the tiny model's shape behind `backend`.
fn cache(model: &Llama, backend: Backend) -> Attention {
    let shape = model.attention_shape();
    let b: Box<dyn AttentionBackend> = match backend {
        Backend::Cpu => Box::new(CpuBackend::new(shape)),
        Backend::Tensor => Box::new(TensorBackend::new(shape, DType::F32, Device::Cpu)),
    };
    pool(b, DType::F32)
}

/// A 12-block pool of the tiny model's shape in `dtype` behind `backend`.
fn pool(backend: Box<dyn AttentionBackend>, dtype: DType) -> Attention {
    let cfg = KvCacheConfig {
        num_layers: 2,
        num_kv_heads: 2,
        head_dim: 16,
        block_size: BLOCK,
        num_blocks: 12,
        dtype_size: dtype.size_in_bytes(),
        groups: weir::kv::KvGroups::uniform(2, false),
    };
    Attention::new(backend, cfg).unwrap()
}

/// Batch of one sequence computing `tokens` at positions `start..`.
fn batch(tokens: &[u32], start: usize) -> ForwardBatch {
    single_seq_batch(tokens, start, &TABLE, BLOCK)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn prompt(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 37 + 11) % 256).collect()
}

#[test]
fn prefill_then_decodes_match_reference() {
    for backend in BACKENDS {
        prefill_then_decodes(backend);
    }
}

fn prefill_then_decodes(backend: Backend) {
    let model = weir_model();
    let (refm, mut rcache) = reference_model();
    let mut kv = cache(&model, backend);
    let p = prompt(13);
    let ours = model.forward(&batch(&p, 0), &mut kv).unwrap();
    let theirs = refm
        .forward(
            &Tensor::new(p.as_slice(), &Device::Cpu)
                .unwrap()
                .unsqueeze(0)
                .unwrap(),
            0,
            &mut rcache,
        )
        .unwrap();
    let d = max_abs_diff(&ours, &theirs);
    assert!(d < 1e-4, "{backend:?}: prefill logits differ by {d}");
    // decode 10 tokens one at a time, crossing several block boundaries
    for (pos, step) in (p.len()..).zip(0..10u32) {
        let tok = [(step * 53 + 7) % 256];
        let ours = model.forward(&batch(&tok, pos), &mut kv).unwrap();
        let theirs = refm
            .forward(
                &Tensor::new(&tok[..], &Device::Cpu)
                    .unwrap()
                    .unsqueeze(0)
                    .unwrap(),
                pos,
                &mut rcache,
            )
            .unwrap();
        let d = max_abs_diff(&ours, &theirs);
        assert!(
            d < 1e-4,
            "{backend:?}: decode at position {pos} differs by {d}"
        );
    }
}

#[test]
fn chunked_prefill_matches_whole_prefill() {
    let model = weir_model();
    let p = prompt(22);
    for backend in BACKENDS {
        let mut kv = cache(&model, backend);
        let whole = model.forward(&batch(&p, 0), &mut kv).unwrap();
        let mut kv = cache(&model, backend);
        model.forward(&batch(&p[..5], 0), &mut kv).unwrap();
        model.forward(&batch(&p[5..14], 5), &mut kv).unwrap();
        let chunked = model.forward(&batch(&p[14..], 14), &mut kv).unwrap();
        let d = max_abs_diff(&whole, &chunked);
        assert!(d < 1e-4, "{backend:?}: chunked prefill differs by {d}");
    }
}

#[test]
fn three_sequences_batched_equal_each_alone() {
    for backend in BACKENDS {
        three_sequences_batched(backend);
    }
}

fn three_sequences_batched(backend: Backend) {
    let model = weir_model();
    let prompts = [prompt(3), prompt(9), prompt(17)];
    let mut alone = Vec::new();
    for p in &prompts {
        let mut kv = cache(&model, backend);
        alone.push(model.forward(&batch(p, 0), &mut kv).unwrap());
    }
    // pack the three in one batch, each in its own blocks
    let tables: [Vec<u32>; 3] = [vec![7], vec![1, 4, 10], vec![0, 2, 3, 5, 6]];
    let seqs: Vec<(&[u32], &[u32])> = prompts
        .iter()
        .zip(&tables)
        .map(|(p, t)| (p.as_slice(), t.as_slice()))
        .collect();
    let b = packed_batch(&seqs, BLOCK);
    let mut kv = cache(&model, backend);
    let batched = model.forward(&b, &mut kv).unwrap();
    for (i, a) in alone.iter().enumerate() {
        let row = batched.narrow(0, i, 1).unwrap();
        let d = max_abs_diff(a, &row);
        assert!(
            d < 1e-4,
            "{backend:?}: sequence {i} differs by {d} when batched"
        );
    }
}

/// Qwen2 (q/k/v biases) against candle-transformers' own Qwen2 on the same tiny weights.
#[test]
fn qwen2_with_qkv_bias_matches_reference() {
    use candle_transformers::models::qwen2;
    let mut weights = tiny_llama_weights(2);
    for l in 0..2 {
        for (m, n) in [("q_proj", 64), ("k_proj", 32), ("v_proj", 32)] {
            let b = Tensor::randn(0f32, 0.5, n, &Device::Cpu).unwrap();
            weights.insert(format!("model.layers.{l}.self_attn.{m}.bias"), b);
        }
    }
    let mut cfg_json = tiny_llama_config_json();
    cfg_json["model_type"] = "qwen2".into();
    cfg_json["sliding_window"] = 512.into();
    cfg_json["max_window_layers"] = 2.into();
    cfg_json["use_sliding_window"] = false.into();
    cfg_json["hidden_act"] = "silu".into();
    let cfg = LlamaConfig::from_hf(&cfg_json).unwrap();
    assert!(cfg.attention_bias);
    let vb = VarBuilder::from_tensors(weights.clone(), DType::F32, &Device::Cpu);
    let model = Llama::load(&mut VarBuilderWeights::new(vb), cfg).unwrap();
    let qcfg: qwen2::Config = serde_json::from_value(cfg_json).unwrap();
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let mut refm = qwen2::ModelForCausalLM::new(&qcfg, vb).unwrap();
    let mut kv = cache(&model, Backend::Cpu);
    let p = prompt(11);
    let ours = model.forward(&batch(&p, 0), &mut kv).unwrap();
    let input = Tensor::new(p.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let theirs = refm.forward(&input, 0).unwrap();
    let d = max_abs_diff(&ours, &theirs);
    assert!(d < 1e-4, "qwen2 prefill logits differ by {d}");
    for (pos, tok) in (p.len()..).zip([3u32, 200, 17]) {
        let ours = model.forward(&batch(&[tok], pos), &mut kv).unwrap();
        let input = Tensor::new(&[tok], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let theirs = refm.forward(&input, pos).unwrap();
        let d = max_abs_diff(&ours, &theirs);
        assert!(d < 1e-4, "qwen2 decode at {pos} differs by {d}");
    }
}

/// Logits of a 13-token prompt then 3 decodes: weir's model in `dtype` on the tensor backend
/// against the f32 reference, max difference over all of them.
fn bf16_against_reference(
    model: &Llama,
    refm: &reference::Llama,
    rcache: &mut reference::Cache,
) -> f32 {
    let shape = model.attention_shape();
    let backend = Box::new(TensorBackend::new(shape, DType::BF16, Device::Cpu));
    let mut kv = pool(backend, DType::BF16);
    let p = prompt(13);
    let mut worst = 0f32;
    let mut pos = 0;
    for chunk in [&p[..], &[3], &[200], &[17]] {
        let ours = model.forward(&batch(chunk, pos), &mut kv).unwrap();
        let input = Tensor::new(chunk, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let theirs = refm.forward(&input, pos, rcache).unwrap();
        worst = worst.max(max_abs_diff(&ours, &theirs));
        pos += chunk.len();
    }
    worst
}

#[test]
fn bf16_merged_projections_match_reference() {
    let weights = tiny_llama_weights(1);
    let vb = VarBuilder::from_tensors(weights, DType::BF16, &Device::Cpu);
    let cfg = LlamaConfig::from_hf(&tiny_llama_config_json()).unwrap();
    let model = Llama::load(&mut VarBuilderWeights::new(vb), cfg).unwrap();
    let (refm, mut rcache) = reference_model();
    let d = bf16_against_reference(&model, &refm, &mut rcache);
    println!("bf16 merged projections: max |weir - reference| = {d:.3e}");
    assert!(
        model.projections_merged(),
        "bf16 weights are dense and merged"
    );
    assert!(
        !weir_model().projections_merged(),
        "f32 CPU weights stay in weir's panels"
    );
    assert!(d < 0.15, "bf16 logits differ by {d}");
}

/// A CUDA graph replays decode steps padded to a bucket (`runner::graph_inputs`): the static
/// buffer of a step, read back as a batch and run here on the CPU, gives the step's rows the
/// same logits as the step alone, bit for bit, while padding rows compute in the scratch block.
#[test]
fn graph_padded_decode_rows_equal_the_step_alone() {
    use weir::runner::graph_inputs::{bucket, GraphInputs};
    let model = weir_model();
    // three sequences with prompts in the pool, then one decode step of all three
    let prompts = [prompt(3), prompt(9), prompt(6)];
    let tables: [Vec<u32>; 3] = [vec![7, 2], vec![1, 4, 10], vec![0, 5]];
    let mut kv = cache(&model, Backend::Cpu);
    for (p, t) in prompts.iter().zip(&tables) {
        model
            .forward(&single_seq_batch(p, 0, t, BLOCK), &mut kv)
            .unwrap();
    }
    let next = [[17u32], [42], [99]];
    let inputs: Vec<SeqInput> = (0..3)
        .map(|i| SeqInput {
            token_ids: &next[i],
            start: prompts[i].len(),
            block_table: &tables[i],
            sample: true,
        })
        .collect();
    let step = ForwardBatch::build(&inputs, BLOCK);
    let alone = model.forward(&step, &mut kv).unwrap();
    // the bucket's buffer, read back as a batch of 4 rows (the last one padding)
    let (rows, cap) = bucket(&step, 64).unwrap();
    assert_eq!(rows, 4);
    let layout = GraphInputs {
        rows,
        max_blocks: cap.div_ceil(BLOCK),
        scratch_block: 11,
        block_size: BLOCK,
    };
    let v = layout.fill(Some(&step));
    let tables: Vec<Vec<u32>> = (0..rows)
        .map(|i| {
            let keys = v[4 * rows + i] as usize;
            let row = &v[5 * rows + i * layout.max_blocks..][..layout.max_blocks];
            row[..keys.div_ceil(BLOCK)].to_vec()
        })
        .collect();
    let tokens: Vec<[u32; 1]> = (0..rows).map(|i| [v[i]]).collect();
    let padded: Vec<SeqInput> = (0..rows)
        .map(|i| SeqInput {
            token_ids: &tokens[i],
            start: v[rows + i] as usize,
            block_table: &tables[i],
            sample: true,
        })
        .collect();
    let padded = ForwardBatch::build(&padded, BLOCK);
    assert_eq!(
        padded.slot_mapping,
        v[2 * rows..3 * rows],
        "slots match the tables"
    );
    let graph = model.forward(&padded, &mut kv).unwrap();
    assert_eq!(max_abs_diff(&alone, &graph.narrow(0, 0, 3).unwrap()), 0.0);
}
