//! LoRA adapters in each layout and from each source issue 23 names:
//! - one adapter as a PEFT folder and as llama.cpp's GGUF LoRA file (its own
//!   convert_lora_to_gguf.py), on a Hugging Face folder and on the GGUF llama.cpp's
//!   convert_hf_to_gguf.py makes of it (tests/lora_gguf.py writes them): the four pairings give
//!   the same prompt logprobs and tokens, and PEFT itself agrees. llama.cpp's converters permute
//!   a Llama's Q/K rows (and its adapters' Q/K B rows), so two of the pairings need weir to
//!   permute the adapter's rows;
//! - adapters from `hf://` (the Hugging Face cache, offline): a PEFT repository and one GGUF file
//!   of a repository, answering as the same files on local disk. (`gs://` adapters:
//!   tests/store_gcs.rs, against its emulator.)

use std::path::{Path, PathBuf};
use weir::api::ServerOptions;
use weir::manager::ModelDecl;
use weir::models::lora::Target;
use weir::store::ModelSpec;
use weir::testing::lora::{
    check_with_peft, engine_core_with_loras, max_diff, prompt_logprobs, write_peft_adapter,
};
use weir::testing::{
    default_model_path, llama_cpp_dir, manager_limits, run_python_test, test_limits,
    write_tiny_llama, TestServer,
};

/// tests/lora_gguf.py's folder, written once per version of the script.
async fn fixtures() -> PathBuf {
    // the tests of this file run in parallel: one of them writes the folder, the other waits
    static WRITING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _one = WRITING.lock().await;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/lora_gguf.py");
    let key = weir::testing::script_key(&script);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("lora-gguf-{key:016x}"));
    if !dir.join("adapter.gguf").is_file() {
        let tmp = dir.with_extension("partial");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).unwrap();
        let (model, llama_cpp) =
            tokio::task::spawn_blocking(|| (default_model_path(), llama_cpp_dir()))
                .await
                .unwrap();
        run_python_test(
            "lora_gguf.py",
            &[
                &model.display().to_string(),
                &llama_cpp.display().to_string(),
                &tmp.display().to_string(),
            ],
        )
        .await;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).unwrap();
    }
    dir
}

#[test]
fn peft_and_gguf_adapters_answer_alike_on_folders_and_ggufs() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = rt.block_on(fixtures());
    let (folder, gguf) = (dir.join("base"), dir.join("base.gguf"));
    let (peft, gguf_lora) = (dir.join("adapter"), dir.join("adapter.gguf"));
    let limits = test_limits(64, 16);
    let prompt: Vec<u32> = (0..40).map(|i| 100 + (i * 37 % 2000)).collect();
    let mut core = engine_core_with_loras(&folder, &limits, &[&peft]);
    let (want_tokens, want) = prompt_logprobs(&mut core, 0, &prompt, Some(0));
    print!(
        "{}",
        rt.block_on(check_with_peft(&mut core, &folder, &peft, &prompt))
    );
    let (_, plain) = prompt_logprobs(&mut core, 1, &prompt, None);
    assert!(
        max_diff(&plain, &want) > 1e-2,
        "the adapter changed nothing"
    );
    for (base, adapter) in [(&folder, &gguf_lora), (&gguf, &peft), (&gguf, &gguf_lora)] {
        let mut core = engine_core_with_loras(base, &limits, &[adapter]);
        let (tokens, got) = prompt_logprobs(&mut core, 0, &prompt, Some(0));
        let d = max_diff(&got, &want);
        println!(
            "{} on {}: max |logprob difference| {d:.2e}",
            adapter.display(),
            base.display()
        );
        assert!(d < 1e-4, "{} on {}: {d}", adapter.display(), base.display());
        assert_eq!(tokens, want_tokens);
    }
}

/// Puts `files` (name, source path) into the Hugging Face cache layout under `hub` as the
/// repository `repo` at one commit.
fn hub_repo(hub: &Path, repo: &str, files: &[(&str, &Path)]) {
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let root = hub.join(format!("models--{}", repo.replace('/', "--")));
    let snap = root.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    for (name, src) in files {
        std::fs::copy(src, snap.join(name)).unwrap();
    }
    std::fs::create_dir_all(root.join("refs")).unwrap();
    std::fs::write(root.join("refs/main"), commit).unwrap();
}

async fn complete(url: &str, model: &str) -> serde_json::Value {
    let r = reqwest::Client::new()
        .post(format!("{url}/v1/completions"))
        .json(
            &serde_json::json!({"model": model, "prompt": "Hello", "max_tokens": 8,
            "temperature": 0, "logprobs": 0}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{model}");
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapters_from_the_hugging_face_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let base = write_tiny_llama(&tmp.path().join("base"), 5);
    let peft = tmp.path().join("peft");
    write_peft_adapter(&peft, 3, 8, 16.0, false, &Target::ALL);
    let hub = tmp.path().join("hub");
    hub_repo(
        &hub,
        "test-org/tiny-lora",
        &[
            ("adapter_config.json", &peft.join("adapter_config.json")),
            (
                "adapter_model.safetensors",
                &peft.join("adapter_model.safetensors"),
            ),
        ],
    );
    let fix = fixtures().await;
    hub_repo(
        &hub,
        "test-org/lora-GGUF",
        &[("adapter-f32.gguf", &fix.join("adapter.gguf"))],
    );
    let mut decl = ModelDecl::new(ModelSpec {
        id: "tiny".into(),
        source: base.display().to_string(),
    });
    let mut gguf_decl = ModelDecl::new(ModelSpec {
        id: "gguf-base".into(),
        source: fix.join("base.gguf").display().to_string(),
    });
    let spec = |id: &str, source: String| ModelSpec {
        id: id.into(),
        source,
    };
    decl.loras = vec![
        spec("local", peft.display().to_string()),
        spec("from-hub", "hf://test-org/tiny-lora".into()),
    ];
    gguf_decl.loras = vec![
        spec("local-gguf", fix.join("adapter.gguf").display().to_string()),
        spec(
            "hub-gguf",
            "hf://test-org/lora-GGUF/adapter-f32.gguf".into(),
        ),
    ];
    let sources = weir::testing::offline_sources(
        hub,
        weir::store::gcs::GcsConfig::new(None, tmp.path().join("cache")),
        tmp.path().join("cache"),
    );
    let limits = manager_limits(test_limits(64, 16), None, 60);
    let s = TestServer::start_decls(
        vec![decl, gguf_decl],
        limits,
        sources,
        ServerOptions::default(),
        false,
    );
    let lps = |v: &serde_json::Value| v["choices"][0]["logprobs"]["token_logprobs"].clone();
    for (local, remote) in [("local", "from-hub"), ("local-gguf", "hub-gguf")] {
        let (want, got) = (
            complete(&s.url, local).await,
            complete(&s.url, remote).await,
        );
        assert_eq!(
            got["choices"][0]["text"], want["choices"][0]["text"],
            "{remote}"
        );
        assert_eq!(lps(&got), lps(&want), "{remote}");
    }
    let plain = complete(&s.url, "tiny").await;
    assert_ne!(lps(&plain), lps(&complete(&s.url, "local").await));
}

/// An adapter that cannot be read (an `hf://` repository not in the offline cache) does not keep
/// its base model from loading: the model and its other adapters answer, and requests on the bad
/// adapter get 503 with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_adapter_leaves_its_model_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let base = write_tiny_llama(&tmp.path().join("base"), 5);
    let peft = tmp.path().join("peft");
    write_peft_adapter(&peft, 3, 8, 16.0, false, &Target::ALL);
    let mut decl = ModelDecl::new(ModelSpec {
        id: "tiny".into(),
        source: base.display().to_string(),
    });
    for (id, source) in [
        ("missing", "hf://test-org/not-cached".to_string()),
        ("good", peft.display().to_string()),
    ] {
        decl.loras.push(ModelSpec {
            id: id.into(),
            source,
        });
    }
    let sources = weir::testing::offline_sources(
        tmp.path().join("hub"),
        weir::store::gcs::GcsConfig::new(None, tmp.path().join("cache")),
        tmp.path().join("cache"),
    );
    let limits = manager_limits(test_limits(64, 16), None, 60);
    let s = TestServer::start_decls(vec![decl], limits, sources, ServerOptions::default(), false);
    complete(&s.url, "tiny").await;
    complete(&s.url, "good").await;
    let r = reqwest::Client::new()
        .post(format!("{}/v1/completions", s.url))
        .json(&serde_json::json!({"model": "missing", "prompt": "Hello", "max_tokens": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    let v: serde_json::Value = r.json().await.unwrap();
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("HF_HUB_OFFLINE"), "{v}");
}

/// A GGUF adapter made for another architecture is refused (as llama.cpp refuses it): the
/// fixture's Llama adapter, relabelled `qwen2`, on the Llama it was made for.
#[test]
fn a_gguf_adapter_of_another_architecture_is_refused() {
    use candle_core::quantized::gguf_file::{self, Value};
    use weir::models::lora::LoraAdapter;
    use weir::testing::lora::TINY_SHAPE;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fix = rt.block_on(fixtures());
    let dev = candle_core::Device::Cpu;
    let dtype = candle_core::DType::F32;
    let good = fix.join("adapter.gguf");
    assert!(LoraAdapter::load("a", &good, &TINY_SHAPE, &dev, dtype).is_ok());
    let mut f = std::fs::File::open(&good).unwrap();
    let ct = gguf_file::Content::read(&mut f).unwrap();
    let qwen = Value::String("qwen2".into());
    let metadata: Vec<(&str, &Value)> = ct
        .metadata
        .iter()
        .map(|(k, v)| match k.as_str() {
            "general.architecture" => (k.as_str(), &qwen),
            _ => (k.as_str(), v),
        })
        .collect();
    let tensors: Vec<_> = ct
        .tensor_infos
        .keys()
        .map(|n| (n.as_str(), ct.tensor(&mut f, n, &dev).unwrap()))
        .collect();
    let refs: Vec<(&str, &candle_core::quantized::QTensor)> =
        tensors.iter().map(|(n, t)| (*n, t)).collect();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("qwen2-adapter.gguf");
    gguf_file::write(&mut std::fs::File::create(&bad).unwrap(), &metadata, &refs).unwrap();
    let err = LoraAdapter::load("a", &bad, &TINY_SHAPE, &dev, dtype)
        .err()
        .expect("refused");
    assert!(err.contains("\"qwen2\""), "{err}");
}
