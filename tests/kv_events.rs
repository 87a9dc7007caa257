//! KV cache events as vLLM publishes them (`--kv-events-config`), read by a vLLM-style
//! subscriber (tests/kv_events.py: pyzmq SUB + DEALER, msgspec with vLLM's structs): stores of a
//! prompt's full blocks as one parent-linked chain with its tokens, nothing stored again on a
//! prefix hit, removals of evicted blocks, replay from a sequence number, and the cache cleared
//! when the model is unloaded. The real binary on loopback.

use weir::testing::process::{wait_ready, Proc};
use weir::testing::{default_model_path, free_port, run_python_test};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_events_reach_a_vllm_subscriber() {
    let (port, pub_port, replay_port) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"{{"enable_kv_cache_events": true, "publisher": "zmq",
            "endpoint": "tcp://*:{pub_port}", "replay_endpoint": "tcp://*:{replay_port}",
            "topic": "kv-events"}}"#
    );
    let model = format!("smol={}", default_model_path().display());
    let args = [
        "--model",
        &model,
        "--port",
        &port.to_string(),
        "--preload",
        "smol",
        "--num-kv-blocks",
        "48",
        "--kv-events-config",
        &config,
    ];
    let _server = Proc::spawn(env!("CARGO_BIN_EXE_weir"), &args.map(String::from));
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&url).await;
    run_python_test(
        "kv_events.py",
        &[
            &url,
            "smol",
            &format!("tcp://127.0.0.1:{pub_port}"),
            &format!("tcp://127.0.0.1:{replay_port}"),
            "kv-events",
            "16",
        ],
    )
    .await;
}
