//! Model-free scheduler tests: each calls `schedule()`, builds the runner's output by hand and
//! feeds it to `update_from_output()`.

use super::*;
use crate::step::{Sampled, SamplingParams, SchedulingPolicy, StopConditions};
use std::time::Instant;

struct TestConfig {
    num_blocks: usize,
    block_size: usize,
    max_batched_tokens: usize,
    max_num_seqs: usize,
    prefix_caching: bool,
    policy: SchedulingPolicy,
}

impl Default for TestConfig {
    fn default() -> Self {
        Self {
            num_blocks: 64,
            block_size: 4,
            max_batched_tokens: 64,
            max_num_seqs: 16,
            prefix_caching: false,
            policy: SchedulingPolicy::Fcfs,
        }
    }
}

fn test_scheduler(c: TestConfig) -> Scheduler {
    Scheduler::new(SchedulerConfig {
        max_num_seqs: c.max_num_seqs,
        max_num_batched_tokens: c.max_batched_tokens,
        block_size: c.block_size,
        num_blocks: c.num_blocks,
        max_model_len: 1 << 20,
        enable_prefix_caching: c.prefix_caching,
        policy: c.policy,
        sliding_window: None,
        kv_groups: crate::kv::KvGroups::uniform(1, false),
        whole_prompts: false,
        max_loras: None,
        speculative: None,
    })
}

const EOS: u32 = 0;

fn make_requests(n: usize, prompt_len: usize, max_tokens: usize) -> Vec<Request> {
    (0..n)
        .map(|i| Request {
            id: RequestId(i as u64),
            prompt_token_ids: (0..prompt_len).map(|t| 10 + t as u32).collect(),
            sampling: SamplingParams::greedy(),
            stop: StopConditions {
                max_tokens,
                eos_token_ids: vec![EOS],
                ..Default::default()
            },
            priority: 0,
            arrival: Instant::now(),
            cache_salt: None,
            follows: None,
            constraint: None,
            task: crate::step::Task::Generate,
            background: false,
            lora: None,
            lora_hold: None,
        })
        .collect()
}

/// Samples `token` for every sampling sequence of the step.
fn sample_all(out: &SchedulerOutput, token: u32) -> ModelRunnerOutput {
    ModelRunnerOutput {
        sampled: out
            .scheduled
            .iter()
            .filter(|s| s.sample)
            .map(|_| Sampled::plain(token))
            .collect(),
        ..ModelRunnerOutput::default()
    }
}

fn step(s: &mut Scheduler, token: u32) -> (SchedulerOutput, Vec<TokenDelta>) {
    let mut out = s.schedule();
    let runner = sample_all(&out, token);
    let deltas = s.update_from_output(&mut out, runner);
    (out, deltas)
}

fn ids(out: &SchedulerOutput) -> Vec<u64> {
    out.scheduled.iter().map(|s| s.request_id.0).collect()
}

#[test]
fn admits_fcfs_and_batches_prefill_with_decode() {
    let mut s = test_scheduler(TestConfig::default());
    let mut reqs = make_requests(2, 5, 10).into_iter();
    s.add(reqs.next().unwrap()).unwrap();
    let (out, deltas) = step(&mut s, 42);
    assert_eq!(ids(&out), vec![0]);
    assert_eq!(out.scheduled[0].num_new_tokens, 5);
    assert_eq!(deltas.len(), 1);
    s.add(reqs.next().unwrap()).unwrap();
    let (out, _) = step(&mut s, 42);
    // decode of 0 (1 token) and the whole prompt of 1 in one step
    assert_eq!(ids(&out), vec![0, 1]);
    assert_eq!(out.num_batched_tokens, 1 + 5);
    assert!(out.scheduled.iter().all(|x| x.sample));
}

#[test]
fn long_prompt_is_chunked_under_the_token_budget() {
    let mut s = test_scheduler(TestConfig {
        max_batched_tokens: 8,
        ..Default::default()
    });
    for r in make_requests(1, 20, 4) {
        s.add(r).unwrap();
    }
    let chunks: Vec<(usize, bool)> = (0..3)
        .map(|_| {
            let (out, _) = step(&mut s, 42);
            (out.scheduled[0].num_new_tokens, out.scheduled[0].sample)
        })
        .collect();
    assert_eq!(chunks, vec![(8, false), (8, false), (4, true)]);
    assert_eq!(s.seqs.get(&RequestId(0)).unwrap().num_output_tokens(), 1);
}

#[test]
fn decodes_are_not_stalled_by_a_long_new_prompt() {
    let mut s = test_scheduler(TestConfig {
        max_batched_tokens: 8,
        ..Default::default()
    });
    let mut reqs = make_requests(2, 4, 50).into_iter();
    s.add(reqs.next().unwrap()).unwrap();
    step(&mut s, 42);
    let mut long = reqs.next().unwrap();
    long.prompt_token_ids = vec![5; 30];
    s.add(long).unwrap();
    for _ in 0..4 {
        let (out, deltas) = step(&mut s, 42);
        assert_eq!(out.scheduled[0].request_id, RequestId(0));
        assert_eq!(out.scheduled[0].num_new_tokens, 1);
        assert!(deltas.iter().any(|d| d.request_id == RequestId(0)));
        assert!(out.num_batched_tokens <= 8);
    }
}

#[test]
fn respects_max_num_seqs() {
    let mut s = test_scheduler(TestConfig {
        max_num_seqs: 2,
        ..Default::default()
    });
    for r in make_requests(3, 2, 5) {
        s.add(r).unwrap();
    }
    let (out, _) = step(&mut s, 42);
    assert_eq!(ids(&out), vec![0, 1]);
    assert_eq!(s.num_waiting(), 1);
}

#[test]
fn waits_when_blocks_run_out() {
    // 4 blocks of 4 tokens; each 8-token prompt needs 2 blocks
    let mut s = test_scheduler(TestConfig {
        num_blocks: 4,
        ..Default::default()
    });
    for r in make_requests(3, 8, 1) {
        s.add(r).unwrap();
    }
    let (out, deltas) = step(&mut s, 42);
    assert_eq!(ids(&out), vec![0, 1]);
    assert_eq!(s.num_waiting(), 1);
    // both finish (max_tokens 1) and return their blocks; the third is admitted next
    assert!(deltas
        .iter()
        .all(|d| d.finish == Some(FinishReason::Length)));
    assert_eq!(s.num_blocks_used(), 0);
    let (out, _) = step(&mut s, 42);
    assert_eq!(ids(&out), vec![2]);
}

#[test]
fn preempts_newest_when_blocks_run_out_and_keeps_its_tokens() {
    // 4 blocks of 4 tokens; two 8-token prompts take all of them.
    let mut s = test_scheduler(TestConfig {
        num_blocks: 4,
        ..Default::default()
    });
    for r in make_requests(2, 8, 6) {
        s.add(r).unwrap();
    }
    let (out, _) = step(&mut s, 42); // 8 prompt tokens computed, 1 sampled: 9 tokens each
    assert_eq!(ids(&out), vec![0, 1]);
    assert_eq!(s.num_blocks_used(), 4);
    // token 9 of seq 0 needs a 5th block: seq 1 (newest) is preempted
    let (out, deltas) = step(&mut s, 43);
    assert_eq!(out.preempted, vec![RequestId(1)]);
    assert_eq!(ids(&out), vec![0]);
    assert_eq!(deltas.len(), 1);
    let seq1 = s.seqs.get(&RequestId(1)).unwrap();
    assert_eq!(seq1.status, SequenceStatus::Preempted);
    assert_eq!(seq1.num_computed_tokens, 0);
    assert_eq!(seq1.num_output_tokens(), 1, "generated token is kept");
    assert!(seq1.block_tables.iter().all(|t| t.is_empty()));
    // run seq 0 to completion; then seq 1 recomputes all 9 tokens and samples its 2nd token
    let mut sampled_for_1 = Vec::new();
    for _ in 0..20 {
        let (out, deltas) = step(&mut s, 44);
        for d in deltas.iter().filter(|d| d.request_id == RequestId(1)) {
            sampled_for_1.push((out.scheduled.len(), d.new_token_ids.clone()));
        }
        if !s.has_work() {
            break;
        }
    }
    assert!(!s.has_work());
    assert_eq!(sampled_for_1.len(), 5, "6 max_tokens minus the one kept");
    assert_eq!(s.num_blocks_used(), 0);
    assert_eq!(s.num_preemptions(), 1);
}

#[test]
fn preempts_itself_when_alone_and_out_of_blocks() {
    let mut s = test_scheduler(TestConfig {
        num_blocks: 2,
        ..Default::default()
    });
    // 8 tokens of prompt need 2 blocks; max_tokens 0 fits, but two requests of 4 each block each other
    for r in make_requests(2, 4, 4) {
        s.add(r).unwrap();
    }
    let mut finished = 0;
    for _ in 0..50 {
        let (_, deltas) = step(&mut s, 42);
        finished += deltas.iter().filter(|d| d.finish.is_some()).count();
        if !s.has_work() {
            break;
        }
    }
    assert_eq!(finished, 2);
    assert_eq!(s.num_blocks_used(), 0);
}

#[test]
fn rejects_request_that_could_never_fit() {
    let mut s = test_scheduler(TestConfig {
        num_blocks: 2,
        ..Default::default()
    });
    let r = make_requests(1, 6, 3).pop().unwrap();
    let err = s.add(r).unwrap_err();
    assert!(
        matches!(
            err,
            AdmissionError::TooLong {
                needed: 9,
                limit: 8,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!s.has_work());
}

#[test]
fn eos_and_max_tokens_finish_and_free() {
    let mut s = test_scheduler(TestConfig::default());
    for r in make_requests(2, 3, 3) {
        s.add(r).unwrap();
    }
    let mut out = s.schedule();
    let runner = ModelRunnerOutput {
        sampled: vec![Sampled::plain(EOS), Sampled::plain(7)],
        ..ModelRunnerOutput::default()
    };
    let deltas = s.update_from_output(&mut out, runner);
    assert_eq!(deltas[0].finish, Some(FinishReason::Eos));
    assert_eq!(deltas[1].finish, None);
    let (_, d) = step(&mut s, 7);
    assert_eq!(d[0].finish, None);
    let (_, d) = step(&mut s, 7);
    assert_eq!(d[0].finish, Some(FinishReason::Length));
    assert_eq!(s.num_blocks_used(), 0);
}

#[test]
fn min_tokens_and_ignore_eos_hold_back_eos() {
    let mut s = test_scheduler(TestConfig::default());
    let mut reqs = make_requests(2, 3, 4);
    reqs[0].stop.min_tokens = 2;
    reqs[1].stop.ignore_eos = true;
    for r in reqs {
        s.add(r).unwrap();
    }
    let (_, d) = step(&mut s, EOS);
    assert!(d.iter().all(|d| d.finish.is_none()));
    let (_, d) = step(&mut s, EOS);
    assert_eq!(d[0].finish, Some(FinishReason::Eos));
    assert_eq!(d[1].finish, None);
}

#[test]
fn abort_frees_blocks_running_or_waiting() {
    let mut s = test_scheduler(TestConfig {
        max_num_seqs: 1,
        ..Default::default()
    });
    for r in make_requests(2, 9, 10) {
        s.add(r).unwrap();
    }
    step(&mut s, 42);
    assert!(s.num_blocks_used() > 0);
    assert!(s.abort(RequestId(0)));
    assert!(s.abort(RequestId(1)));
    assert!(!s.abort(RequestId(1)));
    assert_eq!(s.num_blocks_used(), 0);
    assert!(!s.has_work());
    assert!(s.schedule().is_empty());
}

#[test]
fn failed_step_errors_scheduled_sequences_and_frees_them() {
    let mut s = test_scheduler(TestConfig::default());
    for r in make_requests(2, 3, 10) {
        s.add(r).unwrap();
    }
    let out = s.schedule();
    let deltas = s.fail_scheduled(&out, "boom");
    assert_eq!(deltas.len(), 2);
    assert!(deltas
        .iter()
        .all(|d| matches!(&d.finish, Some(FinishReason::Error(m)) if m == "boom")));
    assert_eq!(s.num_blocks_used(), 0);
}

fn cached() -> TestConfig {
    TestConfig {
        prefix_caching: true,
        ..Default::default()
    }
}

fn run_all(s: &mut Scheduler) {
    for _ in 0..1000 {
        if !s.has_work() {
            return;
        }
        step(s, 42);
    }
    panic!("scheduler does not finish");
}

#[test]
fn second_request_reuses_the_full_blocks_of_a_shared_prefix() {
    let mut s = test_scheduler(cached());
    let mut reqs = make_requests(2, 10, 2).into_iter();
    s.add(reqs.next().unwrap()).unwrap();
    run_all(&mut s);
    assert_eq!(s.num_blocks_used(), 0);
    assert_eq!(
        s.num_cached_blocks(),
        2,
        "10 prompt + 1 computed output = 2 full blocks of 4"
    );
    s.add(reqs.next().unwrap()).unwrap();
    let (out, deltas) = step(&mut s, 42);
    assert_eq!(
        out.scheduled[0].num_new_tokens, 2,
        "8 of 10 prompt tokens come from the cache"
    );
    assert_eq!(deltas[0].num_cached_tokens, 8);
    run_all(&mut s);
    assert_eq!(s.num_blocks_used(), 0);
}

#[test]
fn a_fully_cached_prompt_still_computes_its_last_token() {
    let mut s = test_scheduler(cached());
    let mut reqs = make_requests(2, 8, 1).into_iter();
    s.add(reqs.next().unwrap()).unwrap();
    run_all(&mut s);
    s.add(reqs.next().unwrap()).unwrap();
    let (out, deltas) = step(&mut s, 42);
    assert_eq!(
        out.scheduled[0].num_new_tokens, 4,
        "hits stop before the block holding the last token"
    );
    assert_eq!(deltas[0].num_cached_tokens, 4);
}

#[test]
fn different_prefixes_and_disabled_caching_do_not_hit() {
    let mut s = test_scheduler(cached());
    let mut reqs = make_requests(2, 10, 1);
    reqs[1].prompt_token_ids[0] = 999; // differs in the first block: the chain misses from there
    let mut reqs = reqs.into_iter();
    s.add(reqs.next().unwrap()).unwrap();
    run_all(&mut s);
    s.add(reqs.next().unwrap()).unwrap();
    let (out, _) = step(&mut s, 42);
    assert_eq!(out.scheduled[0].num_new_tokens, 10);

    let mut s = test_scheduler(TestConfig::default());
    let mut reqs = make_requests(2, 10, 1).into_iter();
    s.add(reqs.next().unwrap()).unwrap();
    run_all(&mut s);
    assert_eq!(s.num_cached_blocks(), 0);
    s.add(reqs.next().unwrap()).unwrap();
    let (out, _) = step(&mut s, 42);
    assert_eq!(out.scheduled[0].num_new_tokens, 10);
}

#[test]
fn cached_free_blocks_are_evicted_when_the_pool_needs_them() {
    // 4 blocks: the first request leaves 2 cached free blocks; a 16-token prompt needs all 4
    let mut s = test_scheduler(TestConfig {
        num_blocks: 5,
        ..cached()
    });
    let mut reqs = make_requests(2, 10, 1);
    reqs[1].prompt_token_ids = (100..116).collect();
    let mut reqs = reqs.into_iter();
    s.add(reqs.next().unwrap()).unwrap();
    run_all(&mut s);
    assert_eq!(s.num_cached_blocks(), 2);
    s.add(reqs.next().unwrap()).unwrap();
    run_all(&mut s);
    assert_eq!(s.num_blocks_used(), 0);
    assert!(s.num_cached_blocks() <= 5);
}

#[test]
fn running_sequences_share_cached_blocks_and_free_them_once() {
    let mut s = test_scheduler(cached());
    let mut reqs = make_requests(3, 9, 6).into_iter();
    s.add(reqs.next().unwrap()).unwrap();
    step(&mut s, 42); // prompt computed: blocks 0-1 full and registered
    s.add(reqs.next().unwrap()).unwrap();
    s.add(reqs.next().unwrap()).unwrap();
    let (out, _) = step(&mut s, 42);
    // the decode of request 0, then 1 prompt token each for requests 1 and 2
    let new: Vec<usize> = out.scheduled.iter().map(|x| x.num_new_tokens).collect();
    assert_eq!(new, vec![1, 1, 1]);
    run_all(&mut s);
    assert_eq!(s.num_blocks_used(), 0);
}

fn with_priorities(prios: &[i32], prompt_len: usize, max_tokens: usize) -> Vec<Request> {
    let mut reqs = make_requests(prios.len(), prompt_len, max_tokens);
    for (r, p) in reqs.iter_mut().zip(prios) {
        r.priority = *p;
    }
    reqs
}

#[test]
fn priority_policy_admits_lower_values_first_fcfs_among_equals() {
    let mut s = test_scheduler(TestConfig {
        max_num_seqs: 2,
        policy: SchedulingPolicy::Priority,
        ..Default::default()
    });
    for r in with_priorities(&[5, 1, 5, 1], 3, 1) {
        s.add(r).unwrap();
    }
    let (out, _) = step(&mut s, 42);
    assert_eq!(ids(&out), vec![1, 3]);
    let (out, _) = step(&mut s, 42);
    assert_eq!(ids(&out), vec![0, 2]);
}

#[test]
fn fcfs_policy_ignores_priority() {
    let mut s = test_scheduler(TestConfig {
        max_num_seqs: 2,
        ..Default::default()
    });
    for r in with_priorities(&[5, 1, 5, 1], 3, 1) {
        s.add(r).unwrap();
    }
    let (out, _) = step(&mut s, 42);
    assert_eq!(ids(&out), vec![0, 1]);
}

#[test]
fn priority_policy_preempts_the_lowest_priority_running_sequence() {
    // 6 blocks of 4; three 8-token prompts (2 blocks each) fill the pool. Request 0 has the
    // lowest priority (largest value) although it is the oldest: it is the victim.
    let mut s = test_scheduler(TestConfig {
        num_blocks: 6,
        policy: SchedulingPolicy::Priority,
        ..Default::default()
    });
    for r in with_priorities(&[9, 0, 0], 8, 5) {
        s.add(r).unwrap();
    }
    let (out, _) = step(&mut s, 42);
    assert_eq!(ids(&out), vec![1, 2, 0]);
    let (out, _) = step(&mut s, 42);
    assert_eq!(out.preempted, vec![RequestId(0)]);
    assert_eq!(ids(&out), vec![1, 2]);
    run_all(&mut s);
    assert_eq!(s.num_blocks_used(), 0);
}

#[test]
fn embedding_requests_run_whole_prompts_and_end_with_their_vector() {
    let mut s = Scheduler::new(SchedulerConfig {
        whole_prompts: true,
        ..test_scheduler(TestConfig {
            max_batched_tokens: 8,
            ..TestConfig::default()
        })
        .config
    });
    for (i, len) in [5, 5, 9].into_iter().enumerate() {
        let mut r = make_requests(1, len, 0).pop().unwrap();
        r.id = RequestId(i as u64);
        r.task = crate::step::Task::Embed;
        // longer than a step: refused, never left waiting
        assert_eq!(s.add(r).is_err(), len > 8);
    }
    s.add({
        let mut r = make_requests(1, 5, 0).pop().unwrap();
        r.id = RequestId(3);
        r.task = crate::step::Task::Embed;
        r
    })
    .unwrap();
    for expected in [vec![0], vec![1], vec![3]] {
        let mut out = s.schedule();
        // the next prompt does not fit what is left of the budget: it waits, whole
        assert_eq!(ids(&out), expected);
        assert!(out.scheduled.iter().all(|x| x.pool && !x.sample));
        let runner = ModelRunnerOutput {
            pooled: vec![vec![expected[0] as f32; 3]],
            ..ModelRunnerOutput::default()
        };
        let deltas = s.update_from_output(&mut out, runner);
        assert_eq!(deltas.len(), 1);
        assert_eq!(deltas[0].embedding, Some(vec![expected[0] as f32; 3]));
        assert_eq!(deltas[0].finish, Some(FinishReason::Length));
        assert!(deltas[0].new_token_ids.is_empty());
        assert_eq!(s.num_blocks_used(), 0, "an embedding keeps no blocks");
    }
    assert!(!s.has_work());
}

#[test]
fn batch_lines_wait_behind_interactive_requests_and_are_preempted_first() {
    // room for two running sequences of 8 tokens (2 blocks each) and no more
    let mut s = test_scheduler(TestConfig {
        num_blocks: 4,
        max_num_seqs: 2,
        ..TestConfig::default()
    });
    let mut reqs = make_requests(4, 6, 4);
    for r in &mut reqs[..2] {
        r.background = true;
    }
    let mut reqs = reqs.into_iter();
    s.add(reqs.next().unwrap()).unwrap(); // batch line 0
    s.add(reqs.next().unwrap()).unwrap(); // batch line 1
    s.add(reqs.next().unwrap()).unwrap(); // interactive 2, after them
    let (out, _) = step(&mut s, 42);
    // the interactive request went ahead of both batch lines
    assert_eq!(ids(&out), vec![2, 0]);
    s.add(reqs.next().unwrap()).unwrap(); // interactive 3
                                          // sequences grow until blocks run short: the batch line is preempted, not 2
    let mut preempted = Vec::new();
    for _ in 0..4 {
        let (out, _) = step(&mut s, 42);
        preempted.extend(out.preempted.iter().map(|r| r.0));
    }
    assert!(
        !preempted.is_empty() && preempted.iter().all(|&id| id < 2),
        "{preempted:?}"
    );
}

#[test]
fn max_loras_passes_over_a_third_adapter_until_one_is_done() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_loras: Some(2),
        ..*test_scheduler(TestConfig::default()).config()
    });
    let loras = [Some(0), Some(1), Some(2), None, Some(0)];
    for (i, mut r) in make_requests(5, 4, 3).into_iter().enumerate() {
        r.lora = loras[i].map(crate::step::LoraId);
        s.add(r).unwrap();
    }
    // adapters 0 and 1 run; adapter 2 waits; the base model and adapter 0 again are admitted
    let out = s.schedule();
    assert_eq!(ids(&out), vec![0, 1, 3, 4]);
    assert_eq!(s.adapters(), (vec![0, 1], vec![2]));
    run_all(&mut s);
    assert_eq!(s.adapters(), (vec![], vec![]));
    assert_eq!(
        s.num_blocks_used(),
        0,
        "the third adapter ran once the others were done"
    );
}

/// A hybrid model's scheduler: one global and one sliding KV group (window 8), 4-token blocks,
/// 4-token steps, prefix caching on.
fn hybrid() -> Scheduler {
    Scheduler::new(SchedulerConfig {
        sliding_window: Some(8),
        kv_groups: KvGroups {
            full: 1,
            sliding: 1,
            group_size: 1,
        },
        ..*test_scheduler(TestConfig {
            prefix_caching: true,
            max_batched_tokens: 4,
            ..Default::default()
        })
        .config()
    })
}

#[test]
fn hybrid_groups_hit_the_cache_with_the_sliding_window_only() {
    let mut s = hybrid();
    let mut reqs = make_requests(2, 20, 2).into_iter();
    s.add(reqs.next().unwrap()).unwrap();
    run_all(&mut s);
    assert_eq!(s.num_blocks_used(), 0);
    s.add(reqs.next().unwrap()).unwrap();
    let (out, _) = step(&mut s, 42);
    let seq = &s.seqs[&RequestId(1)];
    // 16 of 20 tokens cached; position 16 sees 9..=16: the sliding group needs blocks 2 and 3
    assert_eq!(seq.num_cached_tokens, 16);
    let (global, sliding) = (&seq.block_tables[0], &seq.block_tables[1]);
    assert_eq!((global.len(), global.live_blocks().len()), (5, 5));
    assert_eq!((sliding.len(), sliding.live_blocks().len()), (5, 3));
    assert!(!sliding.is_live(1) && sliding.is_live(2));
    // the runner reads the first live block in place of the skipped ones
    let ids = &out.scheduled[0].block_tables[1];
    assert_eq!(ids[0], ids[2]);
    assert_eq!(s.num_blocks_used(), 8);
    run_all(&mut s);
    assert_eq!(s.num_blocks_used(), 0);
}

#[test]
fn drafts_run_after_the_last_token_and_only_kept_ones_count() {
    let mut s = Scheduler::new(SchedulerConfig {
        speculative: Some(spec::SpecConfig {
            num_tokens: 3,
            lookup_min: 1,
            lookup_max: 2,
            disable_by_batch_size: None,
        }),
        ..*test_scheduler(TestConfig::default()).config()
    });
    let mut r = make_requests(1, 1, 10).pop().unwrap();
    r.prompt_token_ids = vec![5, 6, 7, 8, 5, 6];
    s.add(r).unwrap();
    let (out, _) = step(&mut s, 7);
    assert!(out.scheduled[0].draft_token_ids.is_empty(), "a prompt step");
    // tokens 5 6 7 8 5 6 7: "6 7" occurred before, followed by 8 5 6
    let mut out = s.schedule();
    let x = &out.scheduled[0];
    assert_eq!(x.draft_token_ids, vec![8, 5, 6]);
    assert_eq!(
        (x.token_ids.clone(), x.num_new_tokens),
        (vec![7, 8, 5, 6], 4)
    );
    assert_eq!(out.num_prompt_tokens, 0, "drafts are not prompt tokens");
    let runner = ModelRunnerOutput {
        sampled: vec![Sampled::plain(9)],
        accepted: vec![vec![Sampled::plain(8), Sampled::plain(5)]],
        ..ModelRunnerOutput::default()
    };
    let deltas = s.update_from_output(&mut out, runner);
    assert_eq!(deltas[0].new_token_ids, vec![8, 5, 9]);
    let seq = &s.seqs[&RequestId(0)];
    assert_eq!(seq.token_ids, vec![5, 6, 7, 8, 5, 6, 7, 8, 5, 9]);
    assert_eq!(
        seq.num_computed_tokens, 9,
        "the rejected draft's K/V does not count"
    );
    let st = s.take_spec_stats();
    assert_eq!((st.drafts, st.draft_tokens, st.accepted_tokens), (1, 3, 2));
    assert_eq!(st.accepted_per_pos, vec![1, 1]);
    run_all(&mut s);
    assert_eq!(s.num_blocks_used(), 0);
}
