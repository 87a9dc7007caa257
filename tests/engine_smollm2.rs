//! Batch invariance on the real default model (SmolLM2-135M-Instruct Q4_1, default flags: the
//! quantized integer kernels): a request's tokens do not depend on what else the engine serves.
//! - 8 greedy chat prompts give the same tokens alone and concurrent;
//! - a seeded temperature-1 request repeated on one engine (the second run hits the prefix cache,
//!   so its last prompt token runs as a 1-row step) gives the same tokens;
//! - under forced preemption (64 blocks of 16, 16 concurrent requests) every output equals its run
//!   alone.

use candle_core::Device;
use std::collections::HashMap;
use weir::engine::core::EngineCore;
use weir::models::weights::GgufWeights;
use weir::models::WeightFormat;
use weir::step::{Request, RequestId, SamplingParams};
use weir::testing::{
    default_model_path, engine_core, greedy_request, run_to_completion, test_limits,
};
use weir::text::{ChatMessage, TextCodec};

const QUESTIONS: [&str; 16] = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Explain photosynthesis in one sentence.",
    "List three prime numbers.",
    "Who wrote Hamlet?",
    "What is 12 times 7?",
    "Give me a synonym for happy.",
    "Why is the sky blue?",
    "Name a planet with rings.",
    "How many legs does a spider have?",
    "Translate 'good morning' to French.",
    "What does a compiler do?",
    "Suggest a name for a cat.",
    "What is the boiling point of water?",
    "Describe a rainbow briefly.",
    "What is the largest ocean?",
];

fn chat_prompts(n: usize) -> Vec<Vec<u32>> {
    let w = GgufWeights::open(&default_model_path(), &Device::Cpu, WeightFormat::Quantized)
        .expect("default model");
    let codec = TextCodec::from_gguf(w.content()).expect("codec");
    QUESTIONS[..n]
        .iter()
        .map(|q| {
            let text = codec
                .apply_chat_template(&[ChatMessage {
                    role: "user".into(),
                    content: q.to_string(),
                    ..ChatMessage::default()
                }])
                .unwrap();
            codec.encode(&text, false).unwrap()
        })
        .collect()
}

fn smol_core(num_kv_blocks: usize) -> EngineCore {
    engine_core(&default_model_path(), &test_limits(num_kv_blocks, 16))
}

fn alone(prompts: &[Vec<u32>], max_tokens: usize) -> HashMap<RequestId, Vec<u32>> {
    let mut out = HashMap::new();
    for (i, p) in prompts.iter().enumerate() {
        let mut core = smol_core(256);
        core.add(greedy_request(i as u64, p.clone(), max_tokens))
            .unwrap();
        out.extend(run_to_completion(&mut core));
    }
    out
}

/// Greedy request `i` of `max_tokens` for each prompt `i`, all queued on `core`.
fn add_greedy(core: &mut EngineCore, prompts: &[Vec<u32>], max_tokens: usize) {
    for (i, p) in prompts.iter().enumerate() {
        core.add(greedy_request(i as u64, p.clone(), max_tokens))
            .unwrap();
    }
}

#[test]
fn eight_greedy_chat_requests_are_the_same_alone_and_concurrent() {
    let prompts = chat_prompts(8);
    let want = alone(&prompts, 40);
    let mut core = smol_core(256);
    add_greedy(&mut core, &prompts, 40);
    let got = run_to_completion(&mut core);
    for (id, toks) in &want {
        assert_eq!(toks.len(), 40);
        assert_eq!(&got[id], toks, "request {id:?} differs when concurrent");
    }
}

#[test]
fn seeded_request_repeated_through_the_prefix_cache_gives_the_same_text() {
    let prompt = chat_prompts(1).remove(0);
    let seeded = |id: u64| Request {
        sampling: SamplingParams {
            temperature: 1.0,
            seed: Some(1234),
            ..Default::default()
        },
        ..greedy_request(id, prompt.clone(), 32)
    };
    let mut core = smol_core(256);
    core.add(seeded(0)).unwrap();
    let first = run_to_completion(&mut core).remove(&RequestId(0)).unwrap();
    core.add(seeded(1)).unwrap();
    let mut second = Vec::new();
    let mut cached = 0;
    while core.has_work() {
        let (deltas, _) = core.step();
        for d in deltas {
            cached = cached.max(d.num_cached_tokens);
            second.extend(d.new_token_ids);
        }
    }
    assert!(
        cached > 0,
        "the second run was meant to hit the prefix cache"
    );
    assert_eq!(second, first);
}

#[test]
fn forced_preemption_keeps_every_output() {
    let prompts = chat_prompts(16);
    let want = alone(&prompts, 40);
    // 64 blocks of 16 = 1024 tokens for 16 requests needing ~75 tokens each at the end
    let mut core = smol_core(64);
    add_greedy(&mut core, &prompts, 40);
    let got = run_to_completion(&mut core);
    assert!(
        core.scheduler().num_preemptions() > 0,
        "the pool was meant to force preemption"
    );
    assert_eq!(got, want);
    assert_eq!(core.scheduler().num_blocks_used(), 0);
}
