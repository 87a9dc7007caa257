"""Interactive TTFT with and without a running batch (see scripts/bench-batch.sh)."""
import concurrent.futures
import json
import platform
import statistics
import sys
import time

import openai


def cpu_name():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def ttft(client, model, i):
    start = time.perf_counter()
    stream = client.chat.completions.create(
        model=model, stream=True, max_tokens=64, temperature=0,
        messages=[{"role": "user", "content": f"Tell me a short fact about the number {i}."}])
    first = None
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
    return first


def interactive(client, model, rounds=3):
    out = []
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for r in range(rounds):
            out += list(pool.map(lambda i: ttft(client, model, r * 8 + i), range(8)))
    return [t for t in out if t is not None]


def main():
    base_url, model = sys.argv[1:3]
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    interactive(client, model, rounds=1)  # warm-up
    alone = interactive(client, model)
    lines = "".join(json.dumps({"custom_id": f"l{i}", "method": "POST", "url": "/v1/completions",
                                "body": {"model": model, "prompt": f"Story {i}:", "max_tokens": 32,
                                         "temperature": 0, "ignore_eos": True}}) + "\n"
                    for i in range(500))
    f = client.files.create(file=("b.jsonl", lines.encode()), purpose="batch")
    b = client.batches.create(input_file_id=f.id, endpoint="/v1/completions", completion_window="24h")
    started = time.perf_counter()
    time.sleep(2)  # the batch is running
    during = interactive(client, model)
    done_during = client.batches.retrieve(b.id).request_counts.completed
    while client.batches.retrieve(b.id).status != "completed":
        time.sleep(0.5)
    batch_s = time.perf_counter() - started
    p50 = lambda xs: statistics.median(xs) * 1e3
    print(f"CPU: {cpu_name()}")
    print("| interactive TTFT p50 (8 streams, 24 requests) | ms |")
    print("|---|---|")
    print(f"| alone | {p50(alone):.0f} |")
    print(f"| during a 500-line batch | {p50(during):.0f} |")
    print(f"| ratio | {p50(during) / p50(alone):.2f}x |")
    print(f"batch: 500 lines in {batch_s:.1f} s ({500 / batch_s:.1f} lines/s); "
          f"{done_during} lines done while the interactive rounds ran")


if __name__ == "__main__":
    main()
