"""Sentences per second: weir's /v1/embeddings (openai client) vs sentence-transformers' encode.

    bench_embeddings.py BASE_URL MODEL MODEL_DIR

Each case runs a warm-up, then a timed pass of the same inputs; the weir and sentence-transformers
passes of a case run back to back, weir first. Prints one table.
"""
import concurrent.futures
import os
import platform
import sys
import time

import openai
import torch
from sentence_transformers import SentenceTransformer

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from openai_embeddings import SENTENCES  # noqa: E402


def cpu_name():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def long_passages(tokenizer, n):
    """n different passages of 240 tokens (with [CLS] and [SEP]), from the sentences."""
    words = " ".join(SENTENCES).split()
    out = []
    for i in range(n):
        text, k = [], i
        while len(tokenizer(" ".join(text))["input_ids"]) < 240:
            text.append(words[k % len(words)])
            k += 7
        while len(tokenizer(" ".join(text))["input_ids"]) > 240:
            text.pop()
        out.append(" ".join(text))
    return out


def weir_rate(client, model, inputs, batch, clients=1):
    chunks = [inputs[i : i + batch] for i in range(0, len(inputs), batch)]

    def send(chunk):
        client.embeddings.create(model=model, input=chunk, encoding_format="float")

    send(chunks[0])  # warm-up
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(send, chunks))
    return len(inputs) / (time.perf_counter() - start)


def st_rate(st, inputs, batch):
    st.encode(inputs[:batch], batch_size=batch)  # warm-up
    start = time.perf_counter()
    st.encode(inputs, batch_size=batch)
    return len(inputs) / (time.perf_counter() - start)


def main():
    base_url, model, model_dir = sys.argv[1:4]
    torch.set_num_threads(os.cpu_count())
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    st = SentenceTransformer(model_dir, device="cpu")
    short = SENTENCES * 4  # 200 inputs
    long = long_passages(st.tokenizer, 64)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} threads; torch {torch.__version__}")
    print("| inputs | batch | clients | weir sentences/s | sentence-transformers sentences/s | weir / s-t |")
    print("|---|---|---|---|---|---|")
    for name, inputs in (("short (~14 tokens)", short), ("long (240 tokens)", long)):
        for batch, clients in ((1, 1), (1, 4), (64, 1)):
            w = weir_rate(client, model, inputs, batch, clients)
            s = st_rate(st, inputs, batch) if clients == 1 else None
            ratio = f"{w / s:.2f}x" if s else "-"
            s_text = f"{s:.1f}" if s else "-"
            print(f"| {name} | {batch} | {clients} | {w:.1f} | {s_text} | {ratio} |", flush=True)


if __name__ == "__main__":
    main()
