//! Seeded simulation: 1,000 requests with random prompt and output lengths, random arrivals,
//! prefixes shared at random and random aborts, through the tiny random model with a KV pool small
//! enough to force preemption. Every request that is not aborted must produce exactly the greedy
//! tokens it produces alone; the pool must be whole again at the end; the prefix cache must hit.

use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::HashMap;
use weir::step::{FinishReason, RequestId};
use weir::testing::{
    engine_core, greedy_request, run_to_completion, test_limits, write_tiny_llama,
};

struct Planned {
    prompt: Vec<u32>,
    max_tokens: usize,
    arrival_step: usize,
    abort_step: Option<usize>,
}

fn plan(n: usize, seed: u64) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let prefixes: Vec<Vec<u32>> = (0..5)
        .map(|_| {
            (0..rng.random_range(4..24))
                .map(|_| rng.random_range(0..256))
                .collect()
        })
        .collect();
    let mut step = 0;
    (0..n)
        .map(|_| {
            step += rng.random_range(0..3);
            let mut prompt = if rng.random_bool(0.5) {
                prefixes[rng.random_range(0..prefixes.len())].clone()
            } else {
                Vec::new()
            };
            let own = rng.random_range(1..20);
            prompt.extend((0..own).map(|_| rng.random_range(0..256u32)));
            Planned {
                prompt,
                max_tokens: rng.random_range(1..16),
                arrival_step: step,
                abort_step: rng
                    .random_bool(0.05)
                    .then(|| step + rng.random_range(0..10)),
            }
        })
        .collect()
}

#[test]
fn thousand_random_requests_complete_exactly_as_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = write_tiny_llama(tmp.path(), 11);
    let reqs = plan(1000, 42);

    // 40 blocks of 4 = 160 tokens: a handful of sequences at once, so preemption happens
    let mut limits = test_limits(40, 4);
    limits.max_num_batched_tokens = Some(32);
    limits.max_num_seqs = Some(16);
    let mut core = engine_core(&dir, &limits);
    let mut out: HashMap<RequestId, Vec<u32>> = HashMap::new();
    let mut finished: HashMap<RequestId, FinishReason> = HashMap::new();
    let mut cached_tokens = 0;
    let mut aborted = Vec::new();
    let (mut next, mut step) = (0, 0);
    while next < reqs.len() || core.has_work() {
        while next < reqs.len() && reqs[next].arrival_step <= step {
            let r = &reqs[next];
            core.add(greedy_request(next as u64, r.prompt.clone(), r.max_tokens))
                .unwrap();
            next += 1;
        }
        for (i, r) in reqs.iter().enumerate().take(next) {
            let id = RequestId(i as u64);
            if r.abort_step == Some(step) && !finished.contains_key(&id) && core.abort(id) {
                aborted.push(id);
            }
        }
        let (deltas, _) = core.step();
        for d in deltas {
            out.entry(d.request_id)
                .or_default()
                .extend(&d.new_token_ids);
            if let Some(f) = d.finish {
                assert!(!matches!(f, FinishReason::Error(_)), "{f:?}");
                cached_tokens += d.num_cached_tokens;
                finished.insert(d.request_id, f);
            }
        }
        step += 1;
        assert!(step < 200_000, "simulation does not finish");
    }
    assert_eq!(core.scheduler().num_blocks_used(), 0, "every block is back");
    assert!(
        core.scheduler().num_preemptions() > 0,
        "the pool was meant to force preemption"
    );
    assert!(
        cached_tokens > 0,
        "shared prefixes were meant to hit the cache"
    );
    assert!(!aborted.is_empty());
    assert_eq!(finished.len() + aborted.len(), reqs.len());

    // each request alone, on an idle engine without prefix caching
    let mut alone_limits = test_limits(64, 4);
    alone_limits.enable_prefix_caching = false;
    let mut alone_core = engine_core(&dir, &alone_limits);
    for (i, r) in reqs.iter().enumerate() {
        let id = RequestId(i as u64);
        if aborted.contains(&id) {
            continue;
        }
        alone_core
            .add(greedy_request(i as u64, r.prompt.clone(), r.max_tokens))
            .unwrap();
        let alone = run_to_completion(&mut alone_core).remove(&id).unwrap();
        assert_eq!(out[&id], alone, "request {i} differs from running alone");
    }
}
