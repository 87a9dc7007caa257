//! The engine thread's host work per decode step, without a model: `Scheduler::schedule`, the
//! runner's `pack` of the scheduled sequences, and
//! `Scheduler::update_from_output` with one sampled token each, for 64 to 512 running
//! sequences (128-token prompts already computed, then up to 512 decodes; prefix caching on). On a GPU this is the part
//! of a step the card cannot overlap; it should stay small against a decode step's GPU time
//! (a few ms for Llama-3.2-1B / 3.1-8B).
//!
//! `cargo bench --bench engine_host`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::time::Instant;
use weir::scheduler::{Scheduler, SchedulerConfig};
use weir::step::{ModelRunnerOutput, Sampled, SchedulingPolicy};
use weir::step::{Request, RequestId, SamplingParams, StopConditions};

const BLOCK: usize = 16;

/// A scheduler with `n` sequences decoding: prompts computed by one step each.
fn decoding(n: usize) -> Scheduler {
    let mut s = Scheduler::new(SchedulerConfig {
        max_num_seqs: n,
        max_num_batched_tokens: 128 * n,
        block_size: BLOCK,
        num_blocks: n * 4096 / BLOCK,
        max_model_len: 4096,
        enable_prefix_caching: true,
        policy: SchedulingPolicy::Fcfs,
        sliding_window: None,
        kv_groups: weir::kv::KvGroups::uniform(1, false),
        whole_prompts: false,
        max_loras: None,
        speculative: None,
    });
    for i in 0..n {
        s.add(Request {
            id: RequestId(i as u64),
            prompt_token_ids: (0..128).map(|t| (i * 131 + t * 7) as u32 % 32000).collect(),
            sampling: SamplingParams::greedy(),
            stop: StopConditions {
                max_tokens: 3000,
                eos_token_ids: vec![2],
                ..Default::default()
            },
            priority: 0,
            arrival: Instant::now(),
            cache_salt: None,
            follows: None,
            constraint: None,
            task: weir::step::Task::Generate,
            background: false,
            lora: None,
            lora_hold: None,
        })
        .unwrap();
    }
    step(&mut s, 0);
    s
}

/// One step: schedule, pack the batch, take one token per sampling sequence.
fn step(s: &mut Scheduler, token: u32) -> usize {
    let mut out = s.schedule();
    let batch = weir::runner::pack(&out, BLOCK);
    let runner = ModelRunnerOutput {
        sampled: out
            .scheduled
            .iter()
            .filter(|q| q.sample)
            .map(|_| Sampled::plain(100 + token % 1000))
            .collect(),
        ..Default::default()
    };
    let deltas = s.update_from_output(&mut out, runner);
    batch.num_tokens() + deltas.len()
}

fn decode_step_host(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_step_host");
    for n in [64, 256, 512] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            // sequences of 128 + up to 512 tokens: a fresh scheduler every 512 steps (untimed)
            b.iter_custom(|iters| {
                let mut took = std::time::Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    let mut s = decoding(n);
                    let k = left.min(512);
                    let t = Instant::now();
                    for token in 0..k {
                        std::hint::black_box(step(&mut s, token as u32));
                    }
                    took += t.elapsed();
                    left -= k;
                }
                took
            });
        });
    }
    g.finish();
}

criterion_group!(benches, decode_step_host);
criterion_main!(benches);
