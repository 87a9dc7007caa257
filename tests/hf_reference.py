"""Writes Hugging Face folders with transformers itself and the answers transformers gives on
them, for tests/hf_reference.rs to compare weir against.

    python3 tests/hf_reference.py SMOLLM2_GGUF GEMMA3_GGUF LLAMA_CPP_DIR OUT_DIR

OUT_DIR/<name>/ for each case (config.json in transformers' current shape, i.e. `rope_parameters`),
OUT_DIR/<name>-old/ (the same weights, config.json in the shape older transformers wrote: top-level
`rope_theta` and `rope_scaling`, the chat template inside tokenizer_config.json), and
OUT_DIR/expected.json: for every case and prompt, the prompt's token count and the top-5 first-token
log-probabilities transformers computes in float32 through the model's own chat template.

Cases: SmolLM2-135M-Instruct and Gemma 3 270M dequantized from their GGUF files (transformers' own
GGUF conversion), and tiny random-weight models (seeded, norms randomized too) of each model type
weir reads, with every RoPE scaling type weir implements and sliding windows shorter than the
longest prompt. The tiny models share SmolLM2's tokenizer. The tiny models in GGUF_CASES are also
converted to GGUF (f32) by llama.cpp's own converter (LLAMA_CPP_DIR: scripts/llamacpp-src.sh),
as OUT_DIR/<name>.gguf, for weir to answer the same from the GGUF file.
"""

import json
import os
import shutil
import subprocess
import sys

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name three primary colors."},
    ],
    [
        {
            "role": "user",
            "content": "Summarize in one sentence: "
            + " ".join(
                f"Paragraph {i} describes how rivers carve valleys over thousands of years."
                for i in range(12)
            ),
        }
    ],
]

TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=16,
    max_position_embeddings=1024,
    initializer_range=0.2,
    tie_word_embeddings=False,
)

# LongRoPE's two factor sets (one per frequency of the tiny head of 16)
LONGROPE_SHORT = [1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0]
LONGROPE_LONG = [1.0, 2.0, 4.0, 8.0, 12.0, 16.0, 24.0, 32.0]

# (name, model_type, extra config) of the tiny models; short original contexts so that every
# scaling changes the answer at the prompts' lengths.
TINY_CASES = [
    ("llama-default", "llama", {"rope_theta": 100000.0}),
    ("llama-linear", "llama", {"rope_scaling": {"rope_type": "linear", "factor": 4.0}}),
    ("llama-dynamic", "llama", {"rope_scaling": {"rope_type": "dynamic", "factor": 4.0}}),
    (
        "llama-llama3",
        "llama",
        {
            "rope_theta": 500000.0,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        },
    ),
    (
        "llama-yarn",
        "llama",
        {
            "max_position_embeddings": 256,
            "rope_scaling": {
                "rope_type": "yarn",
                "factor": 4.0,
                "original_max_position_embeddings": 64,
            },
        },
    ),
    ("qwen2-default", "qwen2", {"rope_theta": 1000000.0}),
    (
        "qwen2-yarn",
        "qwen2",
        {
            "max_position_embeddings": 256,
            "rope_scaling": {
                "rope_type": "yarn",
                "factor": 2.0,
                "original_max_position_embeddings": 128,
                "beta_fast": 16.0,
            },
        },
    ),
    ("mistral-default", "mistral", {"rope_theta": 1000000.0, "sliding_window": None}),
    ("mistral-window", "mistral", {"sliding_window": 16}),
    ("qwen3-default", "qwen3", {"rope_theta": 1000000.0}),
    (
        "qwen3-window",
        "qwen3",
        {"use_sliding_window": True, "sliding_window": 16, "max_window_layers": 1},
    ),
    ("phi3-window", "phi3", {"sliding_window": 16, "rope_theta": 10000.0}),
    # LongRoPE: prompts shorter than the original context rotate by the short factors; with an
    # original context of 1 every position but 0 (whose angle is 0 either way) by the long ones
    (
        "phi3-longrope-short",
        "phi3",
        {
            "sliding_window": None,
            "original_max_position_embeddings": 512,
            "rope_scaling": {
                "rope_type": "longrope",
                "short_factor": LONGROPE_SHORT,
                "long_factor": LONGROPE_LONG,
            },
        },
    ),
    (
        "phi3-longrope-long",
        "phi3",
        {
            "sliding_window": None,
            "original_max_position_embeddings": 1,
            "rope_scaling": {
                "rope_type": "longrope",
                "short_factor": LONGROPE_SHORT,
                "long_factor": LONGROPE_LONG,
                "attention_factor": 1.1,
            },
        },
    ),
    # mixtures of experts: 8 experts, 2 per token, each family's routing normalisation
    ("mixtral-moe", "mixtral", {"num_local_experts": 8, "num_experts_per_tok": 2}),
    (
        "qwen2moe-shared",
        "qwen2_moe",
        {
            "num_experts": 8,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "shared_expert_intermediate_size": 48,
            # the second layer is a dense MLP
            "mlp_only_layers": [1],
        },
    ),
    (
        "qwen3moe-norm",
        "qwen3_moe",
        {
            "num_experts": 8,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "norm_topk_prob": True,
        },
    ),
    ("olmoe", "olmoe", {"num_experts": 8, "num_experts_per_tok": 2}),
    (
        "gemma2-window",
        "gemma2",
        {
            "sliding_window": 16,
            "layer_types": ["sliding_attention", "full_attention"],
            "query_pre_attn_scalar": 24,
            "attn_logit_softcapping": 5.0,
            "final_logit_softcapping": 3.0,
        },
    ),
    (
        "gemma3-window",
        "gemma3_text",
        {
            # Gemma 3's own pattern (5 sliding layers, then a global one), which GGUF implies
            "num_hidden_layers": 6,
            "sliding_window": 16,
            # the head size: GGUF has no field for another (Gemma 2's case tests one)
            "query_pre_attn_scalar": 16,
            "final_logit_softcapping": 30.0,
            "rope_parameters": {
                "full_attention": {"rope_type": "linear", "factor": 4.0, "rope_theta": 1000000.0},
                "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
            },
        },
    ),
]

# The tiny models whose GGUF conversion keeps everything that changes their answer (llama.cpp's
# converter drops Mistral's and Qwen's windows and needs Qwen2's, Phi-3's and Gemma 2's own
# tokenizers).
GGUF_CASES = [
    "llama-default",
    "llama-linear",
    "llama-dynamic",
    "llama-llama3",
    "llama-yarn",
    "mistral-default",
    "qwen3-default",
    "gemma3-window",
    "mixtral-moe",
    "qwen3moe-norm",
    "olmoe",
]

# Gemma's turns (its GGUF carries no chat template; weir's built-in one for gemma3 files is this).
GEMMA_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- set ns = namespace(system='') -%}"
    "{%- for m in messages -%}"
    "{%- if m['role'] == 'system' -%}"
    "{%- set ns.system = ns.system + m['content'] | trim + '\\n\\n' -%}"
    "{%- else -%}"
    "{%- set role = 'model' if m['role'] == 'assistant' else m['role'] -%}"
    "{{- '<start_of_turn>' + role + '\\n' + (ns.system if role == 'user' else '') + m['content'] | trim + '<end_of_turn>\\n' -}}"
    "{%- if role == 'user' -%}{%- set ns.system = '' -%}{%- endif -%}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<start_of_turn>model\\n' -}}{%- endif -%}"
)


def from_gguf(gguf):
    d, f = os.path.split(gguf)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32)
    # A plain float32 model with the dequantized weights (a GGUF-loaded model does not save).
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing = plain.load_state_dict(model.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys, missing
    return plain.eval(), tok


def tiny(model_type, extra, tok, seed):
    torch.manual_seed(seed)
    config = AutoConfig.for_model(model_type, vocab_size=len(tok), **{**TINY, **extra})
    # eager: the attention implementation that applies every feature (Gemma 2's soft-capping)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager").eval()
    # norms start as ones (or zeros, Gemma's 1 + w): random ones catch a norm read wrongly
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return model


def to_gguf(llama_cpp, folder, out):
    """llama.cpp's convert_hf_to_gguf.py on `folder`, f32 weights, with its own gguf-py."""
    env = dict(os.environ, PYTHONPATH=os.path.join(llama_cpp, "gguf-py"))
    script = os.path.join(llama_cpp, "convert_hf_to_gguf.py")
    r = subprocess.run(
        [sys.executable, script, folder, "--outtype", "f32", "--outfile", out],
        env=env,
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise SystemExit(f"convert_hf_to_gguf.py {folder} failed:\n{r.stderr[-3000:]}")


def expected(model, tok):
    out = []
    for messages in PROMPTS:
        ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1].float()
        logprobs = torch.log_softmax(logits, dim=-1)
        top = torch.topk(logprobs, 6)
        out.append(
            {
                "messages": messages,
                "prompt_tokens": len(ids),
                "top": [[int(i), float(v)] for v, i in zip(top.values, top.indices)],
            }
        )
    return out


def old_shape(new_dir, old_dir):
    """The same folder as transformers 4 wrote it: rope_theta / rope_scaling at the top level of
    config.json and the chat template inside tokenizer_config.json."""
    os.makedirs(old_dir, exist_ok=True)
    for name in os.listdir(new_dir):
        if name not in ("config.json", "tokenizer_config.json", "chat_template.jinja"):
            src, dst = os.path.join(new_dir, name), os.path.join(old_dir, name)
            try:
                os.link(src, dst)  # the same weights: no second copy on disk
            except OSError:
                shutil.copy(src, dst)
    with open(os.path.join(new_dir, "config.json")) as f:
        config = json.load(f)
    rope = dict(config.pop("rope_parameters"))
    if "full_attention" in rope:  # Gemma 3: one dict per layer type; the sliding ones unscaled
        config["rope_local_base_freq"] = rope["sliding_attention"]["rope_theta"]
        rope = dict(rope["full_attention"])
    # Gemma 2 and 3 before layer_types: a pattern (Gemma 2's is fixed at every other layer)
    if config["model_type"] in ("gemma2", "gemma3_text") and config.get("layer_types") == [
        "sliding_attention",
        "full_attention",
    ]:
        del config["layer_types"]
        if config["model_type"] == "gemma3_text":
            config["sliding_window_pattern"] = 2
    config["rope_theta"] = rope.pop("rope_theta")
    if rope.get("rope_type", "default") != "default":
        rope["type"] = rope.pop("rope_type")
        config["rope_scaling"] = rope
    config["torch_dtype"] = config.pop("dtype", "float32")
    with open(os.path.join(old_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    with open(os.path.join(new_dir, "tokenizer_config.json")) as f:
        tcfg = json.load(f)
    with open(os.path.join(new_dir, "chat_template.jinja")) as f:
        tcfg["chat_template"] = f.read()
    with open(os.path.join(old_dir, "tokenizer_config.json"), "w") as f:
        json.dump(tcfg, f, indent=2)


def main():
    smollm2_gguf, gemma3_gguf, llama_cpp, out = sys.argv[1:5]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(os.cpu_count() or 1)
    model, tok = from_gguf(smollm2_gguf)
    cases = [("smollm2", model, tok)]
    for seed, (name, model_type, extra) in enumerate(TINY_CASES):
        cases.append((name, tiny(model_type, extra, tok, seed), tok))
    gemma, gemma_tok = from_gguf(gemma3_gguf)
    gemma_tok.chat_template = GEMMA_TEMPLATE
    cases.append(("gemma3-270m", gemma, gemma_tok))
    answers = {}
    for name, model, tok in cases:
        path = os.path.join(out, name)
        model.save_pretrained(path)
        tok.save_pretrained(path)
        old_shape(path, path + "-old")
        answers[name] = expected(model, tok)
        if name in GGUF_CASES:
            to_gguf(llama_cpp, path, path + ".gguf")
    answers["transformers_version"] = transformers.__version__
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(answers, f, indent=1)


if __name__ == "__main__":
    main()
