"""Writes a GGUF's tokenizer (with its chat template) as a Hugging Face folder, read by
transformers' own GGUF reader: for clients that tokenize prompts themselves (vllm-router's
kv_aware policy).

    python3 scripts/tokenizer_folder.py GGUF OUT_DIR
"""
import os
import sys

from transformers import AutoTokenizer


def main():
    gguf, out = sys.argv[1], sys.argv[2]
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    tok.save_pretrained(out)


if __name__ == "__main__":
    main()
