"""Writes random LoRA adapters in the PEFT layout for a Llama-shaped model (for benchmarks:
their outputs mean nothing, their cost is real).

    python3 scripts/make_lora.py OUT_DIR COUNT [RANK] [TARGETS]

Shape: SmolLM2-135M's (30 layers, hidden 576, 9 query / 3 KV heads of 64, intermediate 1536)
unless WEIR_LORA_SHAPE=layers,hidden,q_dim,kv_dim,intermediate. TARGETS: comma-separated
module names (default: all seven projections). Adapter i goes to OUT_DIR/lora-i.
"""
import json
import os
import sys

import numpy as np
from safetensors.numpy import save_file

MODULES = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn",
           "o_proj": "self_attn", "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}


def main():
    out, count = sys.argv[1], int(sys.argv[2])
    rank = int(sys.argv[3]) if len(sys.argv) > 3 else 16
    targets = sys.argv[4].split(",") if len(sys.argv) > 4 else list(MODULES)
    layers, hidden, q_dim, kv_dim, inter = map(
        int, os.environ.get("WEIR_LORA_SHAPE", "30,576,576,192,1536").split(","))
    dims = {"q_proj": (hidden, q_dim), "k_proj": (hidden, kv_dim), "v_proj": (hidden, kv_dim),
            "o_proj": (q_dim, hidden), "gate_proj": (hidden, inter), "up_proj": (hidden, inter),
            "down_proj": (inter, hidden)}
    for i in range(count):
        rng = np.random.default_rng(i)
        d = os.path.join(out, f"lora-{i}")
        os.makedirs(d, exist_ok=True)
        tensors = {}
        for layer in range(layers):
            for t in targets:
                fan_in, fan_out = dims[t]
                name = f"base_model.model.model.layers.{layer}.{MODULES[t]}.{t}"
                tensors[f"{name}.lora_A.weight"] = (rng.standard_normal((rank, fan_in)) / fan_in ** 0.5).astype(np.float32)
                tensors[f"{name}.lora_B.weight"] = (rng.standard_normal((fan_out, rank)) * 0.01).astype(np.float32)
        save_file(tensors, os.path.join(d, "adapter_model.safetensors"))
        with open(os.path.join(d, "adapter_config.json"), "w") as f:
            json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": rank, "lora_alpha": 2 * rank,
                       "target_modules": targets, "bias": "none", "use_rslora": False}, f)


if __name__ == "__main__":
    main()
