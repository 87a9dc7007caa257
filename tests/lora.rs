//! LoRA adapters served unmerged (issue 23's first slice), on the tiny random Llama with random
//! PEFT adapters the test writes:
//! - an adapter's outputs equal those of the model with the adapter merged into its f32 weights
//!   (greedy tokens, and prompt logprobs within 2e-3), and differ from the base model's;
//! - requests of different adapters and of the base model in one batch (chunked prompts,
//!   preemption) get the same tokens as each alone;
//! - two adapters never share prefix-cache blocks, one adapter does with itself.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use weir::engine::core::EngineCore;
use weir::models::lora::Target;
use weir::step::{LoraId, Request, RequestId, TokenDelta};
use weir::testing::lora::{engine_core_with_loras, write_merged_tiny_llama, write_peft_adapter};
use weir::testing::{
    engine_core, greedy_request, run_to_completion, test_limits, write_tiny_llama,
};

const SEED: u64 = 11;

fn prompts(n: usize, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let len = rng.random_range(5..40);
            (0..len).map(|_| rng.random_range(0..256)).collect()
        })
        .collect()
}

fn request(id: u64, prompt: &[u32], lora: Option<u32>) -> Request {
    let mut r = greedy_request(id, prompt.to_vec(), 10);
    r.lora = lora.map(LoraId);
    r
}

/// Runs `reqs` to the end; every delta of each request.
fn run(core: &mut EngineCore, reqs: Vec<Request>) -> HashMap<RequestId, Vec<TokenDelta>> {
    for r in reqs {
        core.add(r).unwrap();
    }
    let mut out: HashMap<RequestId, Vec<TokenDelta>> = HashMap::new();
    while core.has_work() {
        for d in core.step().0 {
            out.entry(d.request_id).or_default().push(d);
        }
    }
    out
}

fn tokens(deltas: &[TokenDelta]) -> Vec<u32> {
    deltas
        .iter()
        .flat_map(|d| d.new_token_ids.clone())
        .collect()
}

/// `prompt` on `core` (request `id`, adapter `lora`), greedy: its generated tokens and the
/// teacher-forced logprobs of its prompt tokens.
fn prompt_logprobs(
    core: &mut EngineCore,
    id: u64,
    prompt: &[u32],
    lora: Option<u32>,
) -> (Vec<u32>, Vec<f32>) {
    let mut r = request(id, prompt, lora);
    r.sampling.prompt_logprobs = Some(1);
    let deltas = &run(core, vec![r])[&RequestId(id)];
    let lps = deltas
        .iter()
        .flat_map(|d| d.prompt_logprobs.iter().map(|l| l.logprob))
        .collect();
    (tokens(deltas), lps)
}

/// Max |a - b| over two equally long rows.
fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// tests/peft_reference.py: PEFT's prompt logprobs of `base` with `adapter` against those
/// `core` (serving `adapter` as adapter 0) gives; what the script printed.
async fn check_with_peft(
    core: &mut EngineCore,
    base: &std::path::Path,
    adapter: &std::path::Path,
    prompt: &[u32],
) -> String {
    let (_, lps) = prompt_logprobs(core, 0, prompt, Some(0));
    let join = |v: Vec<String>| v.join(",");
    let ids = join(prompt.iter().map(|t| t.to_string()).collect());
    let lps = join(lps.iter().map(|l| l.to_string()).collect());
    let (base, adapter) = (base.display().to_string(), adapter.display().to_string());
    weir::testing::run_python_test("peft_reference.py", &[&base, &adapter, &ids, &lps]).await
}

#[test]
fn an_adapter_computes_what_its_merged_weights_compute() {
    let dir = tempfile::tempdir().unwrap();
    let base = write_tiny_llama(&dir.path().join("base"), SEED);
    let limits = test_limits(256, 16);
    let cases = [
        (8, 16.0, false, vec![Target::Q, Target::V]),
        (16, 8.0, false, Target::ALL.to_vec()),
        (4, 8.0, true, vec![Target::O, Target::Down, Target::Gate]),
    ];
    for (i, (rank, alpha, rslora, targets)) in cases.into_iter().enumerate() {
        let adapter = dir.path().join(format!("adapter{i}"));
        write_peft_adapter(&adapter, 100 + i as u64, rank, alpha, rslora, &targets);
        let merged = dir.path().join(format!("merged{i}"));
        write_merged_tiny_llama(&merged, SEED, &adapter);
        let mut served = engine_core_with_loras(&base, &limits, &[&adapter]);
        let mut reference = engine_core(&merged, &limits);
        let mut plain = engine_core(&base, &limits);
        for (j, p) in prompts(3, i as u64).iter().enumerate() {
            let id = j as u64;
            let (got, g) = prompt_logprobs(&mut served, id, p, Some(0));
            let (want, w) = prompt_logprobs(&mut reference, id, p, None);
            let (_, b) = prompt_logprobs(&mut plain, id, p, None);
            assert_eq!(got, want, "case {i} prompt {j}");
            assert_eq!(g.len(), p.len() - 1);
            let (err, moved) = (max_diff(&g, &w), max_diff(&g, &b));
            assert!(
                err < 2e-3,
                "case {i} prompt {j}: prompt logprobs differ by {err}"
            );
            assert!(
                moved > 1e-2,
                "case {i}: the adapter changes nothing ({moved})"
            );
            println!(
                "case {i} prompt {j}: |adapter - merged| {err:.2e}, |adapter - base| {moved:.2e}"
            );
        }
    }
}

#[test]
fn mixed_batches_give_each_request_its_alone_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let base = write_tiny_llama(&dir.path().join("base"), SEED);
    let (a0, a1) = (dir.path().join("a0"), dir.path().join("a1"));
    write_peft_adapter(&a0, 1, 8, 16.0, false, &[Target::Q, Target::V]);
    write_peft_adapter(&a1, 2, 16, 32.0, false, &Target::ALL);
    let loras = [None, Some(0), Some(1)];
    let ps = prompts(12, 7);
    let reqs = || -> Vec<Request> {
        ps.iter()
            .enumerate()
            .map(|(i, p)| request(i as u64, p, loras[i % 3]))
            .collect()
    };
    let alone_limits = test_limits(256, 4);
    let alone: HashMap<RequestId, Vec<u32>> = reqs()
        .into_iter()
        .map(|r| {
            let id = r.id;
            let mut core = engine_core_with_loras(&base, &alone_limits, &[&a0, &a1]);
            core.add(r).unwrap();
            (id, run_to_completion(&mut core).remove(&id).unwrap())
        })
        .collect();
    // together: a small token budget (chunked prompts), a pool too small for all
    // (preemption); and again with one adapter at a time (`--max-loras 1`)
    for max_loras in [None, Some(1)] {
        let mut limits = test_limits(40, 4);
        limits.max_num_batched_tokens = Some(24);
        limits.max_loras = max_loras;
        let mut core = engine_core_with_loras(&base, &limits, &[&a0, &a1]);
        for r in reqs() {
            core.add(r).unwrap();
        }
        let together = run_to_completion(&mut core);
        assert!(
            core.scheduler().num_preemptions() > 0,
            "the pool forced preemption"
        );
        assert_eq!(together, alone, "max_loras {max_loras:?}");
    }
}

#[test]
fn adapters_never_share_prefix_cache_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let base = write_tiny_llama(&dir.path().join("base"), SEED);
    let (a0, a1) = (dir.path().join("a0"), dir.path().join("a1"));
    write_peft_adapter(&a0, 1, 8, 16.0, false, &[Target::Q, Target::V]);
    write_peft_adapter(&a1, 2, 8, 16.0, false, &[Target::Q, Target::V]);
    let mut core = engine_core_with_loras(&base, &test_limits(256, 4), &[&a0, &a1]);
    let prompt: Vec<u32> = (0..40).map(|i| (i * 7 % 256) as u32).collect();
    let mut cached = |id: u64, lora| {
        let out = run(&mut core, vec![request(id, &prompt, lora)]);
        out[&RequestId(id)]
            .iter()
            .map(|d| d.num_cached_tokens)
            .max()
            .unwrap()
    };
    assert_eq!(cached(0, Some(0)), 0);
    assert_eq!(
        cached(1, Some(1)),
        0,
        "another adapter's blocks were reused"
    );
    assert_eq!(
        cached(2, None),
        0,
        "the base model reused an adapter's blocks"
    );
    assert_eq!(
        cached(3, Some(0)),
        36,
        "the same adapter reuses its full blocks"
    );
}

/// Over HTTP with the official `openai` client (tests/openai_lora.py): `/v1/models` lists each
/// adapter with its parent; a completion on an adapter's name answers under that name with the
/// tokens the engine gives that adapter; the base model's answer differs; an unknown adapter is
/// 404. Adapters are declared as `--lora-modules` declares them (`ModelDecl::loras`). At run
/// time, `/v1/load_lora_adapter` serves the same folder under a new name (the same answers) and
/// `/v1/unload_lora_adapter` takes it away (404 after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapters_through_the_openai_client() {
    use weir::api::ServerOptions;
    use weir::manager::ModelDecl;
    use weir::store::ModelSpec;
    use weir::testing::{manager_limits, run_python_test, TestServer};
    let dir = tempfile::tempdir().unwrap();
    let base = write_tiny_llama(&dir.path().join("base"), SEED);
    let a0 = dir.path().join("sql");
    write_peft_adapter(&a0, 1, 8, 16.0, false, &Target::ALL);
    // the tokens the engine gives the adapter for the prompt the script sends
    let prompt: Vec<u32> = "Hello".bytes().map(u32::from).collect();
    let mut core = engine_core_with_loras(&base, &test_limits(64, 16), &[&a0]);
    let want = run(&mut core, vec![request(0, &prompt, Some(0))]);
    let want: Vec<String> = tokens(&want[&RequestId(0)])
        .iter()
        .map(|t| t.to_string())
        .collect();
    let mut decl = ModelDecl::new(ModelSpec {
        id: "tiny".into(),
        source: base.display().to_string(),
    });
    decl.loras.push(ModelSpec {
        id: "sql".into(),
        source: a0.display().to_string(),
    });
    let limits = manager_limits(test_limits(64, 16), None, 60);
    let sources = weir::config::ServeArgs::from_env().sources();
    let s = TestServer::start_decls(vec![decl], limits, sources, ServerOptions::default(), false);
    let path = a0.display().to_string();
    run_python_test("openai_lora.py", &[&s.url, &want.join(","), &path]).await;
}

/// Dense bf16 weights run q/k/v and gate/up as merged projections (as on a GPU): the adapters'
/// deltas go into the merged outputs side by side. Against the merged model in bf16, at bf16's
/// tolerance.
#[test]
fn adapters_on_merged_projections_match_merged_weights() {
    let dir = tempfile::tempdir().unwrap();
    let base = write_tiny_llama(&dir.path().join("base"), SEED);
    let adapter = dir.path().join("adapter");
    write_peft_adapter(
        &adapter,
        5,
        8,
        16.0,
        false,
        &[Target::K, Target::Up, Target::Down],
    );
    let merged = dir.path().join("merged");
    write_merged_tiny_llama(&merged, SEED, &adapter);
    let mut limits = test_limits(256, 16);
    limits.dtype = weir::models::device::DTypeSpec::Bf16;
    let mut served = engine_core_with_loras(&base, &limits, &[&adapter]);
    let mut reference = engine_core(&merged, &limits);
    let mut plain = engine_core(&base, &limits);
    let p = &prompts(1, 9)[0];
    let (_, g) = prompt_logprobs(&mut served, 0, p, Some(0));
    let (_, w) = prompt_logprobs(&mut reference, 0, p, None);
    let (_, b) = prompt_logprobs(&mut plain, 0, p, None);
    let (err, moved) = (max_diff(&g, &w), max_diff(&g, &b));
    println!("bf16 merged projections: |adapter - merged| {err:.2e}, |adapter - base| {moved:.2e}");
    assert!(err < 0.15 && moved > 4.0 * err, "err {err}, moved {moved}");
}

/// PEFT itself (PyPI `peft` over transformers, f32) applies the adapter weir serves: the
/// teacher-forced log-probabilities of a prompt agree within 1e-3 (tests/peft_reference.py),
/// for a plain and an rsLoRA adapter.
#[tokio::test]
async fn peft_itself_computes_what_weir_computes() {
    let dir = tempfile::tempdir().unwrap();
    let base = write_tiny_llama(&dir.path().join("base"), SEED);
    let cases = [
        (8, 16.0, false, Target::ALL.to_vec()),
        (4, 8.0, true, vec![Target::Q, Target::O, Target::Up]),
    ];
    for (i, (rank, alpha, rslora, targets)) in cases.into_iter().enumerate() {
        let adapter = dir.path().join(format!("adapter{i}"));
        write_peft_adapter(&adapter, 30 + i as u64, rank, alpha, rslora, &targets);
        let mut core = engine_core_with_loras(&base, &test_limits(64, 16), &[&adapter]);
        let prompt = &prompts(1, 40 + i as u64)[0];
        check_with_peft(&mut core, &base, &adapter, prompt).await;
    }
}

/// `--max-lora-rank`: an adapter of a larger rank is refused when it loads, naming the flag.
#[test]
fn an_adapter_above_max_lora_rank_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let base = write_tiny_llama(&dir.path().join("base"), SEED);
    let adapter = dir.path().join("wide");
    write_peft_adapter(&adapter, 1, 16, 16.0, false, &[Target::Q]);
    let mut limits = test_limits(64, 16);
    limits.max_lora_rank = Some(8);
    let local = weir::store::LocalModel::open(&base).unwrap();
    let spec = weir::store::ModelSpec {
        id: "wide".into(),
        source: adapter.display().to_string(),
    };
    let err = weir::manager::loader::read_model(&local, &limits, &[Some(spec.clone())])
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("--max-lora-rank 8"), "{err}");
    limits.max_lora_rank = Some(16);
    assert!(weir::manager::loader::read_model(&local, &limits, &[Some(spec)]).is_ok());
}

/// A real model: SmolLM2-135M written as an f32 Hugging Face folder by transformers
/// (scripts/hf_folder.py, from weir's default GGUF) with a random rank-8 adapter on all seven
/// projections of its 30 layers (scripts/make_lora.py): PEFT's prompt logprobs and weir's
/// agree within 1e-3 (tests/peft_reference.py).
#[tokio::test]
async fn peft_agrees_with_weir_on_smollm2() {
    let dir = tempfile::tempdir().unwrap();
    let (model, adapters) = (dir.path().join("smollm2"), dir.path().join("adapters"));
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let gguf = weir::testing::default_model_path();
    for (script, args) in [
        (
            "scripts/hf_folder.py",
            vec![
                gguf.display().to_string(),
                model.display().to_string(),
                "float32".into(),
            ],
        ),
        (
            "scripts/make_lora.py",
            vec![adapters.display().to_string(), "1".into(), "8".into()],
        ),
    ] {
        let out = std::process::Command::new("python3")
            .arg(root.join(script))
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let adapter = adapters.join("lora-0");
    let mut core = engine_core_with_loras(&model, &test_limits(64, 16), &[&adapter]);
    let prompt: Vec<u32> = (0..40).map(|i| 100 + (i * 37 % 2000)).collect();
    print!(
        "{}",
        check_with_peft(&mut core, &model, &adapter, &prompt).await
    );
}
