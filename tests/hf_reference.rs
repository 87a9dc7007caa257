//! weir against transformers itself on Hugging Face folders that transformers wrote.
//!
//! `tests/hf_reference.py` (transformers and torch from tests/requirements.txt, CPU) writes
//! SmolLM2-135M-Instruct and Gemma 3 270M dequantized from their GGUF files and tiny
//! random-weight models of every model type, RoPE scaling and sliding window weir reads (Llama,
//! Mistral, Qwen2, Qwen3, Gemma 3), each in transformers' current
//! config shape (`rope_parameters`, chat_template.jinja) and the older one (`rope_theta` /
//! `rope_scaling`, the template in tokenizer_config.json), with transformers' float32 top-5
//! first-token logprobs through each model's chat template. weir serves every folder over HTTP
//! and must give the same prompt token count and the same logprobs within 2e-3.
//!
//! The tiny models llama.cpp's own converter turns into GGUF files without loss (f32; the
//! script's `GGUF_CASES`) are served from those files too, held to the same 2e-3: GGUF metadata
//! and tensor names, llama.cpp's Q/K row order, Gemma's stored `1 + w`.
//!
//! The folders are kept under the target directory (keyed by the script's text), so a rerun
//! skips transformers.

use std::path::{Path, PathBuf};
use weir::testing::{
    default_model_path, gemma3_model_path, llama_cpp_dir, run_python_test, test_limits, TestServer,
};

const TOLERANCE: f64 = 2e-3;
/// weir on a GGUF file (its quantized weights, Q8 activations) against transformers on the
/// weights dequantized: the logprobs of transformers' top 3, in nats. Quantized activations
/// move them by up to ~0.35 on these prompts (SmolLM2 Q4_1); a wrong token or template moves
/// them by more (a prefix space on each Gemma turn: 0.9).
const GGUF_TOLERANCE: f64 = 0.5;

/// The folders and transformers' answers, made once per version of the script.
fn reference_dir(rt: &tokio::runtime::Runtime) -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hf_reference.py");
    let key = weir::testing::script_key(&script);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hf-reference-{key:016x}"));
    // the tests of this file run in parallel: one of them writes the folders, the others wait
    static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    if !dir.join("expected.json").is_file() {
        let (smollm2, gemma3) = (default_model_path(), gemma3_model_path());
        rt.block_on(run_python_test(
            "hf_reference.py",
            &[
                &smollm2.display().to_string(),
                &gemma3.display().to_string(),
                &llama_cpp_dir().display().to_string(),
                &dir.display().to_string(),
            ],
        ));
    }
    dir
}

/// weir's top logprobs of the first output token: (token id, logprob).
fn weir_top(answer: &serde_json::Value) -> Vec<(u32, f64)> {
    let first = &answer["choices"][0]["logprobs"]["content"][0];
    first["top_logprobs"]
        .as_array()
        .expect("top_logprobs")
        .iter()
        .map(|t| {
            let id = t["token"]
                .as_str()
                .and_then(|s| s.strip_prefix("token_id:"))
                .and_then(|s| s.parse().ok())
                .expect("token_id:ID");
            (id, t["logprob"].as_f64().expect("logprob"))
        })
        .collect()
}

/// Every one of transformers' top `n` is in weir's top 5 with its logprob within `tolerance`,
/// except a token tied (within `tolerance`) with transformers' sixth, which may trade places
/// with it.
fn compare(
    case: &str,
    want: &serde_json::Value,
    got: &[(u32, f64)],
    (n, tolerance): (usize, f64),
) -> Result<(), String> {
    let top: Vec<(u32, f64)> = want["top"]
        .as_array()
        .expect("top")
        .iter()
        .map(|p| (p[0].as_u64().unwrap() as u32, p[1].as_f64().unwrap()))
        .collect();
    let sixth = top[5].1;
    for &(id, lp) in &top[..n] {
        match got.iter().find(|(g, _)| *g == id) {
            Some(&(_, w)) if (w - lp).abs() <= tolerance => {}
            Some(&(_, w)) => {
                return Err(format!(
                "{case}: token {id}: weir {w:.5}, transformers {lp:.5} (top {top:?}, weir {got:?})"
            ))
            }
            None if lp - sixth <= tolerance => {}
            None => {
                return Err(format!(
                    "{case}: token {id} ({lp:.5}) missing from weir's top 5 {got:?}"
                ))
            }
        }
    }
    Ok(())
}

/// Asks each served model (name, its case in `expected`) the case's prompts for one token and
/// compares the first token's top logprobs with transformers' (`compare`).
fn check(
    rt: &tokio::runtime::Runtime,
    server: &TestServer,
    served: &[(&str, &str)],
    expected: &serde_json::Value,
    n_tolerance: (usize, f64),
) -> Vec<String> {
    let mut failures = Vec::new();
    for &(model, base) in served {
        for (i, want) in expected[base].as_array().unwrap().iter().enumerate() {
            let (status, answer) = rt.block_on(server.post_json(
                "/v1/chat/completions",
                &serde_json::json!({
                    "model": model,
                    "messages": want["messages"],
                    "max_tokens": 1,
                    "temperature": 0,
                    "logprobs": true,
                    "top_logprobs": 5,
                    "return_tokens_as_token_ids": true,
                }),
            ));
            assert_eq!(status, 200, "{model}: {answer}");
            let case = format!("{model} prompt {i}");
            let prompt_tokens = answer["usage"]["prompt_tokens"].as_u64();
            if prompt_tokens != want["prompt_tokens"].as_u64() {
                failures.push(format!(
                    "{case}: {prompt_tokens:?} prompt tokens, transformers {}",
                    want["prompt_tokens"]
                ));
                continue;
            }
            if let Err(e) = compare(&case, want, &weir_top(&answer), n_tolerance) {
                failures.push(e);
            }
        }
    }
    failures
}

#[test]
fn folders_written_by_transformers_answer_as_transformers_does() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = reference_dir(&rt);
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let names: Vec<String> = expected
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "transformers_version")
        .cloned()
        .collect();
    // every case's folder in both config shapes, and the GGUF llama.cpp's converter made of it
    let ggufs = names
        .iter()
        .filter(|n| dir.join(format!("{n}.gguf")).is_file());
    let models: Vec<(String, PathBuf)> = names
        .iter()
        .flat_map(|n| [n.clone(), format!("{n}-old")])
        .map(|n| (n.clone(), dir.join(&n)))
        .chain(ggufs.map(|n| (format!("{n}-gguf"), dir.join(format!("{n}.gguf")))))
        .collect();
    let refs: Vec<(&str, &Path)> = models
        .iter()
        .map(|(n, p)| (n.as_str(), p.as_path()))
        .collect();
    let server = TestServer::start(&refs, test_limits(384, 16));
    let served: Vec<(&str, &str)> = models
        .iter()
        .map(|(m, _)| {
            let base = m.trim_end_matches("-old").trim_end_matches("-gguf");
            (m.as_str(), base)
        })
        .collect();
    let failures = check(&rt, &server, &served, &expected, (5, TOLERANCE));
    assert!(
        failures.is_empty(),
        "weir differs from transformers {}:\n{}",
        expected["transformers_version"],
        failures.join("\n")
    );
}

/// The GGUF files themselves (weir's GGUF tokenizer, built-in Gemma chat template, quantized
/// kernels): the same prompt tokens as transformers, and its top 3 within `GGUF_TOLERANCE`.
#[test]
fn gguf_files_answer_as_transformers_does_on_their_weights() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = reference_dir(&rt);
    let expected: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    let (smollm2, gemma3) = (default_model_path(), gemma3_model_path());
    let server = TestServer::start(
        &[("smollm2-gguf", &smollm2), ("gemma3-gguf", &gemma3)],
        test_limits(384, 16),
    );
    let served = [("smollm2-gguf", "smollm2"), ("gemma3-gguf", "gemma3-270m")];
    let failures = check(&rt, &server, &served, &expected, (3, GGUF_TOLERANCE));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn an_unknown_rope_type_stops_the_server_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let model = weir::testing::write_tiny_llama(dir.path(), 3);
    let mut config = weir::testing::tiny_llama_config_json();
    config["rope_parameters"] = serde_json::json!({"rope_type": "su2", "rope_theta": 10000.0});
    std::fs::write(model.join("config.json"), config.to_string()).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["serve", "--port", "0", "--model"])
        .arg(format!("bad={}", model.display()))
        .env("RUST_LOG", "warn")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // a server that starts despite the config serves until killed: give it 60 s to refuse
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("weir started on a config with an unknown rope_type");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stderr.trim(),
        "Error: model bad: unsupported model: rope_parameters.rope_type \"su2\"; weir implements default, linear, dynamic, llama3, yarn, longrope"
    );
}

#[test]
fn generation_config_sets_the_defaults_a_request_leaves_out() {
    let dir = tempfile::tempdir().unwrap();
    let plain = weir::testing::write_tiny_llama(&dir.path().join("plain"), 5);
    let tuned = weir::testing::write_tiny_llama(&dir.path().join("tuned"), 5);
    // greedy and at most 3 new tokens unless a request says otherwise
    let gen = serde_json::json!({"temperature": 0.0, "max_new_tokens": 3, "do_sample": false});
    std::fs::write(tuned.join("generation_config.json"), gen.to_string()).unwrap();
    let server = TestServer::start(
        &[("plain", plain.as_path()), ("tuned", tuned.as_path())],
        test_limits(384, 16),
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ask = |model: &str, extra: serde_json::Value| {
        let mut body = serde_json::json!({"model": model, "prompt": "hello world", "seed": 1});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, answer) = rt.block_on(server.post_json("/v1/completions", &body));
        assert_eq!(status, 200, "{answer}");
        answer
    };
    let text = |a: &serde_json::Value| a["choices"][0]["text"].as_str().unwrap().to_string();
    // no max_tokens: the checkpoint's max_new_tokens, finishing on length
    let a = ask("tuned", serde_json::json!({}));
    assert_eq!(a["usage"]["completion_tokens"], 3, "{a}");
    assert_eq!(a["choices"][0]["finish_reason"], "length");
    // no temperature: the checkpoint's 0, the same text as an explicit greedy request
    let greedy = ask(
        "plain",
        serde_json::json!({"temperature": 0, "max_tokens": 3}),
    );
    assert_eq!(text(&a), text(&greedy));
    // what the request sets wins
    let longer = ask(
        "tuned",
        serde_json::json!({"max_tokens": 6, "temperature": 0}),
    );
    assert_eq!(longer["usage"]["completion_tokens"], 6, "{longer}");
    // the admin API shows the defaults and the compute dtype
    let admin: serde_json::Value = rt.block_on(async {
        reqwest::get(format!("{}/admin/models", server.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let tuned_status = admin["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == "tuned")
        .unwrap();
    assert_eq!(tuned_status["dtype"], "f32");
    assert_eq!(
        tuned_status["generation_defaults"],
        serde_json::json!({"temperature": 0.0, "max_new_tokens": 3})
    );
    assert!(admin["cpu"]["model"].is_string(), "{admin}");
}
