"""Writes one LoRA adapter in both of its layouts for tests/lora_sources.rs: a tiny random Llama
(SmolLM2's tokenizer, read from its GGUF) as a Hugging Face folder and, converted by llama.cpp's
own convert_hf_to_gguf.py, as an f32 GGUF file; a random PEFT adapter on all seven projections
(PEFT's own save_pretrained) and, converted by llama.cpp's convert_lora_to_gguf.py, the same
adapter as a GGUF LoRA file. llama.cpp's converters permute a Llama's Q/K rows (and the B of
its Q/K adapters) for interleaved RoPE; weir must undo or apply that where the adapter's order
and the model's differ.

    python3 tests/lora_gguf.py SMOLLM2_GGUF LLAMA_CPP_DIR OUT_DIR

Writes OUT_DIR/base/, OUT_DIR/base.gguf, OUT_DIR/adapter/ (PEFT), OUT_DIR/adapter.gguf.
"""
import os
import subprocess
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def run(llama_cpp, script, args):
    env = dict(os.environ, PYTHONPATH=os.path.join(llama_cpp, "gguf-py"))
    r = subprocess.run([sys.executable, os.path.join(llama_cpp, script), *args], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{script} failed:\n{r.stderr[-3000:]}")


def main():
    smollm2, llama_cpp, out = sys.argv[1:4]
    d, f = os.path.split(smollm2)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=f)
    torch.manual_seed(7)
    config = AutoConfig.for_model(
        "llama", vocab_size=len(tok), hidden_size=64, intermediate_size=128,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
        max_position_embeddings=1024, initializer_range=0.2, tie_word_embeddings=False,
        rope_theta=100000.0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    base = os.path.join(out, "base")
    model.save_pretrained(base)
    tok.save_pretrained(base)
    run(llama_cpp, "convert_hf_to_gguf.py", [base, "--outtype", "f32", "--outfile", base + ".gguf"])
    # B random too (PEFT starts it at zero, which would leave the base model unchanged)
    lora = LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS, init_lora_weights=False,
                      task_type="CAUSAL_LM")
    peft = get_peft_model(model, lora)
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.3)
    adapter = os.path.join(out, "adapter")
    peft.save_pretrained(adapter)
    run(llama_cpp, "convert_lora_to_gguf.py",
        [adapter, "--base", base, "--outtype", "f32", "--outfile", adapter + ".gguf"])
    print("ok")


if __name__ == "__main__":
    main()
