//! Every response and stream chunk weir writes (chat, chat chunks, completions, models,
//! errors; with logprobs, n, tools and echo) validates against the shapes OpenAI's published
//! specification requires (tests/openai_wire.py, with `jsonschema`).

use weir::testing::{default_model_path, test_limits, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn responses_match_the_openai_specification() {
    let smol = default_model_path();
    let s = TestServer::start(&[("smol", &smol)], test_limits(1024, 16));
    weir::testing::run_python_test("openai_wire.py", &[&s.url, "smol"]).await;
}
