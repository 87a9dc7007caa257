//! Every response and stream chunk weir writes (chat, chat chunks, completions, models,
//! errors; with logprobs, n, tools and echo) validates against the shapes OpenAI's published
//! specification requires (tests/openai_wire.py, with `jsonschema`).

use weir::testing::{default_model_path, test_limits, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn responses_match_the_openai_specification() {
    let smol = default_model_path();
    let s = TestServer::start(&[("smol", &smol)], test_limits(1024, 16));
    let out = tokio::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_wire.py"))
        .arg(&s.url)
        .arg("smol")
        .output()
        .await
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "tests/openai_wire.py failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
