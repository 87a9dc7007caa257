//! Sliding windows in the paged KV cache: on a model whose every layer attends through a window
//! (Mistral's shape), the blocks that fall out of it are freed while the sequence runs, so a
//! long prompt holds about window + chunk tokens of KV instead of all of them; and freeing them
//! changes no output: a prompt prefilled in small chunks (blocks freed between chunks) gives the
//! tokens of the same prompt in one step, on both CPU attention backends, again from the prefix
//! cache, and beside other requests.

use std::path::{Path, PathBuf};
use weir::engine::core::EngineCore;
use weir::models::attention::BackendKind;
use weir::testing::{engine_core, greedy_request, test_limits, write_tiny_llama};

const BLOCK: usize = 16;
const WINDOW: usize = 256;

/// The tiny model as a Mistral with `window` (none: full attention) and a 16k context.
fn tiny_mistral(dir: &Path, window: Option<usize>) -> PathBuf {
    write_tiny_llama(dir, 6);
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["model_type"] = "mistral".into();
    config["sliding_window"] = window.into();
    config["max_position_embeddings"] = 16384.into();
    std::fs::write(&path, config.to_string()).unwrap();
    dir.to_path_buf()
}

fn core(model: &Path, chunk: usize, backend: &str) -> EngineCore {
    let mut limits = test_limits(600, BLOCK);
    limits.max_num_batched_tokens = Some(chunk);
    limits.attention_backend = backend.parse::<BackendKind>().unwrap();
    engine_core(model, &limits)
}

fn prompt(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 31 + salt) % 250).collect()
}

/// Steps `core` to the end: (each request's tokens by id, the most blocks in use at once).
fn run(core: &mut EngineCore) -> (std::collections::BTreeMap<u64, Vec<u32>>, usize) {
    let mut out = std::collections::BTreeMap::<u64, Vec<u32>>::new();
    let mut peak = 0;
    while core.has_work() {
        let (deltas, _) = core.step();
        peak = peak.max(core.scheduler().num_blocks_used());
        for d in deltas {
            out.entry(d.request_id.0)
                .or_default()
                .extend(d.new_token_ids);
        }
    }
    (out, peak)
}

#[test]
fn an_8k_prompt_holds_the_window_not_the_context() {
    let tmp = tempfile::tempdir().unwrap();
    let mut peaks = Vec::new();
    for window in [Some(WINDOW), None] {
        let model = tiny_mistral(&tmp.path().join(format!("{window:?}")), window);
        let mut c = core(&model, 512, "cpu");
        c.add(greedy_request(1, prompt(8192, 3), 4)).unwrap();
        let (out, peak) = run(&mut c);
        assert_eq!(out[&1].len(), 4);
        assert_eq!(
            c.scheduler().num_blocks_used(),
            0,
            "every block back at the end"
        );
        peaks.push(peak);
    }
    println!(
        "8192-token prompt, 512-token chunks, 16-token blocks: window {WINDOW} peak {} blocks, full attention {} blocks",
        peaks[0], peaks[1]
    );
    // the window and one chunk (each rounded out to whole blocks) vs the whole context
    assert!(peaks[0] <= (WINDOW + 512) / BLOCK + 2, "{peaks:?}");
    assert!(peaks[1] >= 8196 / BLOCK, "{peaks:?}");
}

#[test]
fn freed_blocks_change_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_mistral(tmp.path(), Some(WINDOW));
    let long = prompt(1500, 7);
    for backend in ["cpu", "tensor"] {
        // the whole prompt in one step: no block freed before its first token
        let mut c = core(&model, 2048, backend);
        c.add(greedy_request(1, long.clone(), 12)).unwrap();
        let whole = run(&mut c).0.remove(&1).unwrap();
        // 64-token chunks: blocks freed between chunks and while decoding
        let mut c = core(&model, 64, backend);
        c.add(greedy_request(1, long.clone(), 12)).unwrap();
        assert_eq!(run(&mut c).0[&1], whole, "{backend}: chunked");
        // again from the prefix cache (its first blocks were freed, still cached), beside two
        // other requests
        c.add(greedy_request(2, long.clone(), 12)).unwrap();
        c.add(greedy_request(3, prompt(700, 1), 12)).unwrap();
        c.add(greedy_request(4, prompt(40, 2), 12)).unwrap();
        let (out, _) = run(&mut c);
        assert_eq!(out[&2], whole, "{backend}: cached and batched");
        assert_eq!(c.scheduler().num_blocks_used(), 0);
    }
}
