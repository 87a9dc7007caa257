//! `/v1/embeddings` on all-MiniLM-L6-v2 (a BERT encoder no one here trained, from PyPI) over real
//! HTTP: the official `openai` client's vectors against sentence-transformers' own on 50 varied
//! sentences (cosine >= 0.9999), base64 and float encodings, a sentence alone = the same
//! sentence in a batch bit for bit, token-id input, the 400s (`dimensions`, empty or too long
//! input, a generative model asked for embeddings, an embedding model asked to chat); then
//! embeddings served beside generation on one server, and `/v1/tokenize`.

use weir::testing::{
    minilm_model_path, run_python_test, test_limits, write_tiny_llama, TestServer,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn embeddings_match_sentence_transformers_through_the_openai_client() {
    let tmp = tempfile::tempdir().unwrap();
    let tiny = tmp.path().join("tiny");
    write_tiny_llama(&tiny, 3);
    let minilm = minilm_model_path();
    let server = TestServer::start(
        &[("minilm", minilm.as_path()), ("tiny", tiny.as_path())],
        test_limits(256, 16),
    );
    run_python_test(
        "openai_embeddings.py",
        &[
            &format!("{}/v1", server.url),
            "minilm",
            &minilm.display().to_string(),
            "tiny",
        ],
    )
    .await;

    // generation and embeddings at once, each on its own engine
    let chat_body = serde_json::json!({"model": "tiny", "max_tokens": 8,
        "messages": [{"role": "user", "content": "hello"}]});
    let embed_body = serde_json::json!({"model": "minilm", "input": ["one", "two", "three"]});
    let chat = server.post_json("/v1/chat/completions", &chat_body);
    let embed = server.post_json("/v1/embeddings", &embed_body);
    let ((chat_status, _), (embed_status, embed)) = tokio::join!(chat, embed);
    assert_eq!((chat_status, embed_status), (200, 200));
    assert_eq!(embed["data"].as_array().unwrap().len(), 3);
    assert_eq!(embed["data"][0]["embedding"].as_array().unwrap().len(), 384);

    // `/v1/tokenize` is `/tokenize`: [CLS] hello world [SEP], without the 128-token padding
    // the tokenizer file carries
    let (status, tokens) = server
        .post_json(
            "/v1/tokenize",
            &serde_json::json!({"model": "minilm", "prompt": "hello world"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(tokens["count"], 4, "{tokens}");
}

/// A decoder as an embedding model: tiny random Qwen3 folders in the sentence-transformers
/// layout (written by tests/embeddings_decoder.py with transformers): one pooling its last token
/// (Qwen3-Embedding's layout), one the mean of its tokens with Matryoshka dimensions. Each
/// serves `/v1/embeddings` under `--task auto`, matching sentence-transformers' vectors (cosine
/// >= 0.99999), the same bits alone and in a batch, and refuses to complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decoder_folders_embed_as_sentence_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let minilm = minilm_model_path();
    for pooling in ["last", "mean"] {
        let dir = tmp.path().join(pooling);
        let dir_s = dir.display().to_string();
        let mut args = vec!["write", &dir_s, minilm.to_str().unwrap()];
        args.extend((pooling == "mean").then_some("mean"));
        run_python_test("embeddings_decoder.py", &args).await;
        let server = TestServer::start(&[("emb", dir.as_path())], test_limits(256, 16));
        let url = format!("{}/v1", server.url);
        let mut args = vec!["check", &url, "emb", &dir_s];
        args.extend((pooling == "mean").then_some("mean"));
        run_python_test("embeddings_decoder.py", &args).await;
    }
}

/// `/score` and `/rerank`: a tiny random BERT cross-encoder (written by tests/score_rerank.py with
/// transformers) against sentence-transformers' CrossEncoder (1e-5), and all-MiniLM-L6-v2 scoring
/// by cosine similarity against its sentence-transformers vectors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn score_and_rerank_match_sentence_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let cross = tmp.path().join("cross-encoder");
    let minilm = minilm_model_path();
    run_python_test(
        "score_rerank.py",
        &[
            "write",
            &cross.display().to_string(),
            &minilm.display().to_string(),
        ],
    )
    .await;
    let server = TestServer::start(
        &[("cross", cross.as_path()), ("minilm", minilm.as_path())],
        test_limits(256, 16),
    );
    run_python_test(
        "score_rerank.py",
        &[
            "check",
            &server.url,
            "cross",
            &cross.display().to_string(),
            "minilm",
            &minilm.display().to_string(),
        ],
    )
    .await;
}

/// `--task` refuses what a model cannot serve, at load, in one line naming it: a Gemma as an
/// embedding model, an encoder for generation, a decoder folder pooling by [CLS].
#[test]
fn tasks_a_model_cannot_serve_are_refused_at_load() {
    use weir::manager::limits::ModelTask;
    use weir::manager::loader::load_weights;
    use weir::store::LocalModel;
    let tmp = tempfile::tempdir().unwrap();
    let load = |path: &std::path::Path, task: ModelTask| {
        let mut limits = test_limits(64, 16);
        limits.task = task;
        load_weights(&LocalModel::open(path).unwrap(), &limits)
            .err()
            .map(|e| e.to_string())
    };
    let gemma = weir::testing::write_tiny_gemma3(&tmp.path().join("gemma"), 1);
    let e = load(&gemma, ModelTask::Embed).expect("Gemma cannot embed");
    assert!(e.contains("--task embed"), "{e}");
    assert!(
        load(&gemma, ModelTask::Auto).is_none(),
        "Gemma generates under auto"
    );
    let e = load(&minilm_model_path(), ModelTask::Generate).expect("BERT cannot generate");
    assert!(e.contains("--task generate"), "{e}");
    // a Llama folder whose sentence-transformers modules pool by [CLS]
    let llama = write_tiny_llama(&tmp.path().join("cls"), 2);
    let modules = r#"[{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]"#;
    std::fs::write(llama.join("modules.json"), modules).unwrap();
    std::fs::create_dir_all(llama.join("1_Pooling")).unwrap();
    std::fs::write(
        llama.join("1_Pooling/config.json"),
        r#"{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}"#,
    )
    .unwrap();
    let e = load(&llama, ModelTask::Auto).expect("a decoder does not pool by [CLS]");
    assert!(e.contains("cls"), "{e}");
}
