//! `/v1/responses` over real HTTP through the official `openai` client on SmolLM2
//! (tests/openai_responses.py), and stored responses surviving a restart of the server.

use weir::testing::{default_model_path, run_python_test, test_limits, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn responses_through_the_openai_client() {
    let smol = default_model_path();
    let server = TestServer::start(&[("smol", smol.as_path())], test_limits(512, 16));
    run_python_test(
        "openai_responses.py",
        &[&format!("{}/v1", server.url), "smol"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stored_responses_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let smol = default_model_path();
    let options = || weir::api::ServerOptions {
        response_store: weir::api::openai::responses::store::StoreConfig {
            dir: Some(tmp.path().to_path_buf()),
            max_bytes: 1 << 20,
        },
        ..Default::default()
    };
    let body = serde_json::json!({"model": "smol", "input": "Say hi.", "max_output_tokens": 4,
        "temperature": 0});
    let id = {
        let server =
            TestServer::start_with(&[("smol", smol.as_path())], test_limits(128, 16), options());
        let (status, r) = server.post_json("/v1/responses", &body).await;
        assert_eq!(status, 200, "{r}");
        r["id"].as_str().unwrap().to_string()
    };
    let server =
        TestServer::start_with(&[("smol", smol.as_path())], test_limits(128, 16), options());
    let got: serde_json::Value = reqwest::get(format!("{}/v1/responses/{id}", server.url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["id"], id.as_str(), "{got}");
    assert!(got["output"][0]["type"] == "message", "{got}");
    let follow = serde_json::json!({"model": "smol", "input": "Again.", "max_output_tokens": 4,
        "previous_response_id": id});
    let (status, r) = server.post_json("/v1/responses", &follow).await;
    assert_eq!(status, 200, "{r}");
}
