//! Sliding windows in the paged KV cache: on a model whose every layer attends through a window
//! (Mistral's shape), the blocks that fall out of it are freed while the sequence runs, so a
//! long prompt holds about window + chunk tokens of KV instead of all of them; and freeing them
//! changes no output: a prompt prefilled in small chunks (blocks freed between chunks) gives the
//! tokens of the same prompt in one step, on both CPU attention backends, again from the prefix
//! cache, and beside other requests.
//!
//! The same for a hybrid model (Gemma 3's shape: five sliding layers to one global): its
//! sliding layers' KV groups hold their window while the global group holds the context, and
//! the tokens equal those of the same model with one group for all layers
//! (`--disable-hybrid-kv-cache-manager`).

use std::path::{Path, PathBuf};
use weir::engine::core::EngineCore;
use weir::models::attention::BackendKind;
use weir::testing::{
    engine_core, greedy_request, test_limits, write_tiny_gemma3, write_tiny_llama,
};

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

/// The tiny Gemma 3 with six layers (five sliding through `WINDOW`, the last global, each a
/// copy of one of the tiny model's two) and a 16k context.
fn tiny_gemma3(dir: &Path) -> PathBuf {
    write_tiny_gemma3(dir, 5);
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    config["num_hidden_layers"] = 6.into();
    config["sliding_window"] = WINDOW.into();
    config["max_position_embeddings"] = 16384.into();
    let mut types = vec!["sliding_attention"; 5];
    types.push("full_attention");
    config["layer_types"] = types.into();
    std::fs::write(&path, config.to_string()).unwrap();
    let weights = dir.join("model.safetensors");
    let mut w = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu).unwrap();
    for (name, t) in w.clone() {
        if let Some(rest) = name.strip_prefix("model.layers.") {
            let (l, m) = rest.split_once('.').unwrap();
            for to in (l.parse::<usize>().unwrap() + 2..6).step_by(2) {
                w.insert(format!("model.layers.{to}.{m}"), t.clone());
            }
        }
    }
    candle_core::safetensors::save(&w, &weights).unwrap();
    dir.to_path_buf()
}

fn core(model: &Path, chunk: usize, backend: &str) -> EngineCore {
    core_with(model, chunk, backend, true)
}

fn core_with(model: &Path, chunk: usize, backend: &str, hybrid: bool) -> EngineCore {
    let mut limits = test_limits(1200, BLOCK);
    limits.max_num_batched_tokens = Some(chunk);
    limits.attention_backend = backend.parse::<BackendKind>().unwrap();
    limits.hybrid_kv_cache = hybrid;
    engine_core(model, &limits)
}

/// Layers whose K/V one block holds (every layer, or one KV group's).
fn layers_per_block(core: &EngineCore) -> usize {
    core.scheduler().config().kv_groups.group_size
}

fn prompt(n: usize, salt: u32) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 31 + salt) % 250).collect()
}

/// A greedy request that returns each token's logprob (which sees every K/V the token read,
/// where a greedy token could stay the same).
fn request(id: u64, prompt: Vec<u32>, max_tokens: usize) -> weir::step::Request {
    let mut r = greedy_request(id, prompt, max_tokens);
    r.sampling.logprobs = Some(0);
    r
}

/// Asserts `a` and `b` are the same tokens with the same logprobs: bit for bit on the `cpu`
/// backend (batch-invariant), within 1e-4 on `tensor` (candle's reductions follow the shapes).
fn assert_same(a: &Tokens, b: &Tokens, backend: &str, what: &str) {
    if backend == "cpu" {
        return assert_eq!(a, b, "{backend}: {what}");
    }
    let tokens = |t: &Tokens| t.iter().map(|p| p.0).collect::<Vec<_>>();
    assert_eq!(tokens(a), tokens(b), "{backend}: {what}");
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f32::from_bits(x.1), f32::from_bits(y.1));
        assert!((x - y).abs() < 1e-4, "{backend}: {what}: {x} vs {y}");
    }
}

type ById<T> = std::collections::BTreeMap<u64, T>;
/// A request's tokens, each with its logprob's bits.
type Tokens = Vec<(u32, u32)>;

/// Steps `core` to the end: (each request's tokens by id, the most blocks in use at once).
fn run(core: &mut EngineCore) -> (ById<Tokens>, usize) {
    let (out, peak, _) = run_cached(core);
    (out, peak)
}

/// `run`, and each request's prompt tokens found in the prefix cache.
fn run_cached(core: &mut EngineCore) -> (ById<Tokens>, usize, ById<usize>) {
    let (mut out, mut cached) = (ById::<Tokens>::new(), ById::new());
    let mut peak = 0;
    while core.has_work() {
        let (deltas, _) = core.step();
        peak = peak.max(core.scheduler().num_blocks_used());
        for d in deltas {
            cached.insert(d.request_id.0, d.num_cached_tokens);
            assert_eq!(d.logprobs.len(), d.new_token_ids.len());
            let lps = d.logprobs.iter().map(|l| l.logprob.to_bits());
            out.entry(d.request_id.0)
                .or_default()
                .extend(d.new_token_ids.iter().copied().zip(lps));
        }
    }
    (out, peak, cached)
}

#[test]
fn an_8k_prompt_holds_the_window_not_the_context() {
    let tmp = tempfile::tempdir().unwrap();
    let mut peaks = Vec::new();
    for window in [Some(WINDOW), None] {
        let model = tiny_mistral(&tmp.path().join(format!("{window:?}")), window);
        let mut c = core(&model, 512, "cpu");
        c.add(request(1, prompt(8192, 3), 4)).unwrap();
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

/// A 1,500-token prompt of `model` gives the same tokens and logprobs (bit for bit on the CPU
/// backend) whole with `whole_hybrid` (one step: no block freed before its first token), in
/// 64-token chunks (blocks freed between chunks and while decoding), and again from the prefix
/// cache beside two other requests (its first blocks freed, still cached, or taken by the
/// others), with every block back at the end.
fn assert_freed_blocks_change_no_output(model: &Path, whole_hybrid: bool) {
    let long = prompt(1500, 7);
    for backend in ["cpu", "tensor"] {
        let mut c = core_with(model, 2048, backend, whole_hybrid);
        c.add(request(1, long.clone(), 12)).unwrap();
        let whole = run(&mut c).0.remove(&1).unwrap();
        let mut c = core(model, 64, backend);
        c.add(request(1, long.clone(), 12)).unwrap();
        assert_same(&run(&mut c).0[&1], &whole, backend, "chunked");
        c.add(request(2, long.clone(), 12)).unwrap();
        c.add(request(3, prompt(700, 1), 12)).unwrap();
        c.add(request(4, prompt(40, 2), 12)).unwrap();
        let (out, _, cached) = run_cached(&mut c);
        assert_same(&out[&2], &whole, backend, "cached and batched");
        assert_eq!(
            cached[&2],
            1499 / BLOCK * BLOCK,
            "{backend}: a prefix-cache hit"
        );
        assert_eq!(c.scheduler().num_blocks_used(), 0);
    }
}

#[test]
fn freed_blocks_change_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    assert_freed_blocks_change_no_output(&tiny_mistral(tmp.path(), Some(WINDOW)), true);
}

#[test]
fn a_hybrid_models_sliding_layers_hold_their_window() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_gemma3(tmp.path());
    let long = prompt(8192, 3);
    let mut seen = Vec::new();
    for hybrid in [true, false] {
        let mut c = core_with(&model, 512, "cpu", hybrid);
        c.add(request(1, long.clone(), 4)).unwrap();
        let (mut out, peak) = run(&mut c);
        assert_eq!(c.scheduler().num_blocks_used(), 0, "every block back");
        let groups = c.scheduler().config().kv_groups.num_groups();
        seen.push((out.remove(&1).unwrap(), peak * layers_per_block(&c), groups));
    }
    println!(
        "tiny Gemma 3 (5 sliding layers of window {WINDOW}, 1 global), 8192-token prompt, \
         512-token chunks, 16-token blocks: peak KV {} layer-blocks in {} groups, \
         {} with one group",
        seen[0].1, seen[0].2, seen[1].1
    );
    assert_eq!(seen[0].0, seen[1].0, "the same tokens with one group");
    assert_eq!((seen[0].2, seen[1].2), (6, 1));
    // the global layer's whole context and each sliding layer's window and chunk, vs every
    // layer's whole context
    let blocks = 8196 / BLOCK;
    assert!(
        seen[0].1 <= blocks + 1 + 5 * ((WINDOW + 512) / BLOCK + 2),
        "{seen:?}"
    );
    assert!(seen[1].1 >= 6 * blocks, "{seen:?}");
}

#[test]
fn a_hybrid_models_freed_blocks_change_no_output() {
    let tmp = tempfile::tempdir().unwrap();
    let model = tiny_gemma3(tmp.path());
    assert!(core(&model, 64, "cpu")
        .scheduler()
        .config()
        .kv_groups
        .is_hybrid());
    // the whole prompt with one KV group against the hybrid groups, chunked and cached: the
    // global group's blocks all cached, the sliding groups' first ones released
    assert_freed_blocks_change_no_output(&model, false);
}
