//! The engine loop on the tiny random model: greedy outputs are the same batched or alone, under
//! preemption, and aborting mid-decode returns every block.

use std::collections::HashMap;
use weir::step::RequestId;
use weir::testing::{
    engine_core, greedy_request, run_to_completion, test_limits, write_tiny_llama,
};

fn prompts() -> Vec<Vec<u32>> {
    (0..8u32)
        .map(|i| {
            (0..(3 + 7 * i))
                .map(|t| (t * 31 + i * 17 + 5) % 256)
                .collect()
        })
        .collect()
}

fn run_alone(dir: &std::path::Path) -> HashMap<RequestId, Vec<u32>> {
    let mut out = HashMap::new();
    for (i, p) in prompts().into_iter().enumerate() {
        let mut core = engine_core(dir, &test_limits(256, 4));
        core.add(greedy_request(i as u64, p, 24)).unwrap();
        out.extend(run_to_completion(&mut core));
    }
    out
}

#[test]
fn eight_concurrent_greedy_requests_equal_each_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny_llama(tmp.path(), 3);
    let alone = run_alone(&dir);
    let mut core = engine_core(&dir, &test_limits(256, 4));
    for (i, p) in prompts().into_iter().enumerate() {
        core.add(greedy_request(i as u64, p, 24)).unwrap();
    }
    let batched = run_to_completion(&mut core);
    assert_eq!(batched.len(), 8);
    for (id, toks) in &alone {
        assert_eq!(toks.len(), 24);
        assert_eq!(&batched[id], toks, "request {id:?} differs when batched");
    }
    assert_eq!(core.scheduler().num_blocks_used(), 0);
}

#[test]
fn preemption_and_chunked_prefill_do_not_change_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny_llama(tmp.path(), 3);
    let alone = run_alone(&dir);
    // 30 blocks of 4 = 120 tokens for 8 requests needing up to 76 tokens each; 16-token budget.
    let mut limits = test_limits(30, 4);
    limits.max_num_batched_tokens = Some(16);
    limits.max_num_seqs = Some(16);
    let mut core = engine_core(&dir, &limits);
    for (i, p) in prompts().into_iter().enumerate() {
        core.add(greedy_request(i as u64, p, 24)).unwrap();
    }
    let out = run_to_completion(&mut core);
    assert!(
        core.scheduler().num_preemptions() > 0,
        "the pool was meant to force preemption"
    );
    assert_eq!(out, alone);
    assert_eq!(core.scheduler().num_blocks_used(), 0);
}

#[test]
fn abort_mid_decode_returns_every_block() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny_llama(tmp.path(), 3);
    let mut core = engine_core(&dir, &test_limits(64, 4));
    for (i, p) in prompts().into_iter().take(4).enumerate() {
        core.add(greedy_request(i as u64, p, 100)).unwrap();
    }
    for _ in 0..5 {
        core.step();
    }
    assert!(core.scheduler().num_blocks_used() > 0);
    for i in 0..4 {
        assert!(core.abort(RequestId(i)));
    }
    assert_eq!(core.scheduler().num_blocks_used(), 0);
    assert!(!core.has_work());
}

#[test]
fn failed_step_errors_its_requests_and_the_engine_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny_llama(tmp.path(), 3);
    let mut core = engine_core(&dir, &test_limits(64, 4));
    // token 9999 is outside the tiny vocabulary (258): the embedding lookup fails
    core.add(greedy_request(1, vec![5, 9999, 7], 4)).unwrap();
    let (deltas, _) = core.step();
    assert_eq!(deltas.len(), 1);
    assert!(
        matches!(&deltas[0].finish, Some(weir::step::FinishReason::Error(_))),
        "{deltas:?}"
    );
    assert_eq!(core.scheduler().num_blocks_used(), 0);
    assert!(!core.has_work());
    core.add(greedy_request(2, vec![5, 6, 7], 4)).unwrap();
    let out = run_to_completion(&mut core);
    assert_eq!(out[&RequestId(2)].len(), 4);
}

#[test]
fn prefix_cache_hits_give_the_same_greedy_outputs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny_llama(tmp.path(), 3);
    let shared: Vec<u32> = (0..21).map(|t| (t * 13 + 1) % 256).collect();
    let prompts: Vec<Vec<u32>> = (0..5u32)
        .map(|i| {
            shared
                .iter()
                .copied()
                .chain((0..1 + 3 * i).map(|t| (t * 7 + i) % 256))
                .collect()
        })
        .collect();
    let mut no_cache = test_limits(256, 4);
    no_cache.enable_prefix_caching = false;
    let mut alone = HashMap::new();
    for (i, p) in prompts.iter().enumerate() {
        let mut core = engine_core(&dir, &no_cache);
        core.add(greedy_request(i as u64, p.clone(), 12)).unwrap();
        alone.extend(run_to_completion(&mut core));
    }
    // one engine, prefix caching on: the first request fills the cache, the rest hit it
    let mut core = engine_core(&dir, &test_limits(256, 4));
    core.add(greedy_request(0, prompts[0].clone(), 12)).unwrap();
    let mut out = run_to_completion(&mut core);
    assert!(core.scheduler().num_cached_blocks() >= 5);
    let mut cached_tokens = Vec::new();
    for (i, p) in prompts.iter().enumerate().skip(1) {
        core.add(greedy_request(i as u64, p.clone(), 12)).unwrap();
    }
    while core.has_work() {
        let (deltas, _) = core.step();
        for d in deltas {
            if d.finish.is_some() {
                cached_tokens.push(d.num_cached_tokens);
            }
            out.entry(d.request_id).or_default().extend(d.new_token_ids);
        }
    }
    assert_eq!(out, alone);
    assert!(
        cached_tokens.iter().all(|&c| c == 20),
        "5 full blocks of 4 shared: {cached_tokens:?}"
    );
    assert_eq!(core.scheduler().num_blocks_used(), 0);
}

/// The whole engine on the tensor backend (the CUDA path's candle ops, here on the CPU): in f32
/// it gives the CPU backend's greedy outputs batched; in bf16 (dense bf16 weights, bf16 KV pool)
/// every request completes and every block comes back.
#[test]
fn tensor_backend_engine_matches_cpu_backend_and_runs_in_bf16() {
    use weir::models::attention::BackendKind;
    use weir::models::device::DTypeSpec;
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny_llama(tmp.path(), 3);
    let alone = run_alone(&dir);
    for dtype in [DTypeSpec::F32, DTypeSpec::Bf16] {
        let mut limits = test_limits(256, 4);
        limits.attention_backend = BackendKind::Tensor;
        limits.dtype = dtype;
        let mut core = engine_core(&dir, &limits);
        for (i, p) in prompts().into_iter().enumerate() {
            core.add(greedy_request(i as u64, p, 24)).unwrap();
        }
        let out = run_to_completion(&mut core);
        assert_eq!(out.len(), 8);
        for (id, toks) in &alone {
            assert_eq!(out[id].len(), 24, "{dtype:?}");
            if dtype == DTypeSpec::F32 {
                assert_eq!(
                    &out[id], toks,
                    "request {id:?} differs on the tensor backend"
                );
            }
        }
        assert_eq!(core.scheduler().num_blocks_used(), 0);
    }
}

/// `n` choices of one prompt: the followers wait for the first choice's full prompt blocks and
/// take them from the prefix cache, so four choices of a 100-token prompt hold 6 shared blocks
/// plus one block each (not 4 × 7); every greedy choice equals the prompt served alone.
#[test]
fn n_choices_share_their_prompt_blocks() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny_llama(tmp.path(), 3);
    let prompt: Vec<u32> = (0..100).map(|t| (t * 29 + 3) % 256).collect();
    let limits = test_limits(256, 16);
    let mut core = engine_core(&dir, &limits);
    core.add(greedy_request(0, prompt.clone(), 10)).unwrap();
    let alone = run_to_completion(&mut core).remove(&RequestId(0)).unwrap();

    let mut core = engine_core(&dir, &limits);
    core.add(greedy_request(0, prompt.clone(), 10)).unwrap();
    for i in 1..4 {
        let mut r = greedy_request(i, prompt.clone(), 10);
        r.follows = Some(RequestId(0));
        core.add(r).unwrap();
    }
    let mut out: HashMap<RequestId, Vec<u32>> = HashMap::new();
    let mut most_used = 0;
    let mut cached = HashMap::new();
    while core.has_work() {
        let (deltas, _) = core.step();
        most_used = most_used.max(core.scheduler().num_blocks_used());
        for d in deltas {
            if d.finish.is_some() {
                cached.insert(d.request_id, d.num_cached_tokens);
            }
            out.entry(d.request_id).or_default().extend(d.new_token_ids);
        }
    }
    for i in 0..4 {
        assert_eq!(out[&RequestId(i)], alone, "choice {i}");
    }
    // 100 prompt + 10 output tokens fit 7 blocks of 16; the first 6 are prompt blocks
    assert_eq!(
        most_used,
        6 + 4,
        "shared prompt blocks, one own block per choice"
    );
    for i in 1..4 {
        assert_eq!(
            cached[&RequestId(i)],
            96,
            "choice {i} took 6 blocks from the cache"
        );
    }
    assert_eq!(core.scheduler().num_blocks_used(), 0);
}

/// Prompt logprobs under chunked prefill: a 300-token prompt computed in chunks of 64 reports
/// the same 299 prompt logprobs, on the first token's delta, as computed in one step.
#[test]
fn prompt_logprobs_survive_chunked_prefill() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny_llama(tmp.path(), 3);
    let prompt: Vec<u32> = (0..300).map(|t| (t * 29 + 3) % 256).collect();
    let run = |budget: usize| {
        let mut limits = test_limits(256, 16);
        limits.max_num_batched_tokens = Some(budget);
        let mut core = engine_core(&dir, &limits);
        let mut r = greedy_request(0, prompt.clone(), 3);
        r.sampling.prompt_logprobs = Some(2);
        core.add(r).unwrap();
        let mut got = Vec::new();
        let mut tokens = Vec::new();
        while core.has_work() {
            let (deltas, _) = core.step();
            for d in deltas {
                if !d.new_token_ids.is_empty() && tokens.is_empty() {
                    got = d.prompt_logprobs.clone();
                } else {
                    assert!(d.prompt_logprobs.is_empty(), "reported once");
                }
                tokens.extend(d.new_token_ids);
            }
        }
        (got, tokens)
    };
    let (whole, t1) = run(512);
    let (chunked, t2) = run(64);
    assert_eq!(whole.len(), 299);
    assert_eq!(t1, t2);
    for (p, (a, b)) in whole.iter().zip(&chunked).enumerate() {
        assert_eq!(a.token, prompt[p + 1]);
        assert_eq!((a.token, a.rank), (b.token, b.rank));
        assert!((a.logprob - b.logprob).abs() < 1e-5, "position {}", p + 1);
    }
}
