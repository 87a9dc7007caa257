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
use weir::models::lora::Target;
use weir::step::{Request, RequestId};
use weir::testing::lora::{
    check_with_peft, engine_core_with_loras, max_diff, prompt_logprobs, request, run, tokens,
    write_merged_tiny_llama, write_peft_adapter,
};
use weir::testing::{engine_core, run_to_completion, test_limits, write_tiny_llama};

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

/// `--max-cpu-loras`: 8 adapters (ranks 8 and 16, several target sets) on one model, at most 2
/// in a step (`--max-loras 2`) and 3 read into the model; 64 requests at once over HTTP, spread
/// over the 8 and the base model. Each gets the tokens it gets alone; adapters are read on
/// demand and evicted when idle (counted in /metrics and /admin/models), never more than 3
/// resident.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapters_beyond_max_cpu_loras_are_read_on_demand() {
    use weir::api::ServerOptions;
    use weir::manager::ModelDecl;
    use weir::store::ModelSpec;
    use weir::testing::{manager_limits, TestServer};
    let dir = tempfile::tempdir().unwrap();
    let base = write_tiny_llama(&dir.path().join("base"), SEED);
    let target_sets: [&[Target]; 3] = [&Target::ALL, &[Target::Q, Target::V], &[Target::Down]];
    let paths: Vec<_> = (0..8)
        .map(|i| {
            let p = dir.path().join(format!("a{i}"));
            let rank = if i % 2 == 0 { 8 } else { 16 };
            write_peft_adapter(&p, 100 + i as u64, rank, 16.0, i == 5, target_sets[i % 3]);
            p
        })
        .collect();
    let reqs: Vec<(Vec<u32>, Option<u32>)> = prompts(64, 5)
        .into_iter()
        .enumerate()
        .map(|(i, p)| (p, (i % 9 < 8).then_some((i % 9) as u32)))
        .collect();
    let refs: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
    let mut core = engine_core_with_loras(&base, &test_limits(64, 16), &refs);
    let want: Vec<Vec<u32>> = reqs
        .iter()
        .enumerate()
        .map(|(i, (p, l))| {
            tokens(&run(&mut core, vec![request(i as u64, p, *l)])[&RequestId(i as u64)])
        })
        .collect();
    let mut decl = ModelDecl::new(ModelSpec {
        id: "tiny".into(),
        source: base.display().to_string(),
    });
    for (i, p) in paths.iter().enumerate() {
        decl.loras.push(ModelSpec {
            id: format!("a{i}"),
            source: p.display().to_string(),
        });
    }
    let mut engine = test_limits(64, 16);
    (engine.max_loras, engine.max_cpu_loras) = (Some(2), Some(3));
    let sources = weir::config::ServeArgs::from_env().sources();
    let s = TestServer::start_decls(
        vec![decl],
        manager_limits(engine, None, 120),
        sources,
        ServerOptions::default(),
        false,
    );
    let client = reqwest::Client::new();
    let asks = reqs.iter().map(|(p, l)| {
        let model = l.map_or("tiny".to_string(), |l| format!("a{l}"));
        let body = serde_json::json!({"model": model, "prompt": p, "max_tokens": 10,
            "temperature": 0, "logprobs": 0, "return_tokens_as_token_ids": true,
            "ignore_eos": true});
        let (client, url) = (client.clone(), s.url.clone());
        async move {
            let r = client
                .post(format!("{url}/v1/completions"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let v: serde_json::Value = r.json().await.unwrap();
            v["choices"][0]["logprobs"]["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    t.as_str()
                        .unwrap()
                        .trim_start_matches("token_id:")
                        .parse()
                        .unwrap()
                })
                .collect::<Vec<u32>>()
        }
    });
    let got = futures::future::join_all(asks).await;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g, w, "request {i} (adapter {:?})", reqs[i].1);
    }
    let metrics = s.get_text("/metrics").await;
    let count =
        |name: &str| weir::testing::metric(&metrics, name, &[("model_name", "tiny")]) as u64;
    let (loads, evictions) = (
        count("weir:lora_loads_total"),
        count("weir:lora_evictions_total"),
    );
    println!("adapter loads {loads}, evictions {evictions}");
    assert!(
        loads >= 8 && evictions >= 5,
        "loads {loads}, evictions {evictions}"
    );
    assert_eq!(loads - evictions, 3, "3 resident at the end");
    let admin: serde_json::Value = client
        .get(format!("{}/admin/models", s.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let adapters = admin["data"][0]["adapters"].as_array().unwrap();
    assert_eq!(adapters.len(), 8);
    let loaded = adapters.iter().filter(|a| a["state"] == "loaded").count();
    assert_eq!(loaded, 3, "{adapters:?}");
    let sum = |k: &str| adapters.iter().map(|a| a[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!((sum("loads"), sum("evictions")), (loads, evictions));
    assert!(adapters
        .iter()
        .all(|a| a["in_flight"] == 0 && a["bytes"].is_null() == (a["state"] == "unloaded")));
}
