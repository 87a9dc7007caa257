"""Writes SmolLM2-135M-Instruct as an ordinary Hugging Face folder with transformers itself:
the weights dequantized from weir's default GGUF by transformers' own GGUF reader, saved by
`save_pretrained` in float32 or bfloat16 (config.json in transformers' current shape).

    python3 scripts/hf_folder.py GGUF OUT_DIR [float32|bfloat16]

Needs torch, transformers, gguf and accelerate (scripts/test.sh puts them in target/test-venv).
"""

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from hf_reference import from_gguf  # noqa: E402


def main():
    gguf, out = sys.argv[1], sys.argv[2]
    dtype = getattr(torch, sys.argv[3] if len(sys.argv) > 3 else "float32")
    model, tok = from_gguf(gguf)
    model = model.to(dtype)
    model.config.dtype = dtype
    model.save_pretrained(out)
    tok.save_pretrained(out)


if __name__ == "__main__":
    main()
