"""Chat requests about passages, sent at a fixed concurrency; prints output tokens/s and latency.

    TASK=repeat|story bench_spec.py URL MODEL CONCURRENCY REQUESTS PASSAGES_FILE [OUT_JSON]

TASK repeat (default): each request asks to repeat one paragraph of PASSAGES_FILE (an
editing-style load, where prompt lookup finds drafts); story: to write a short story inspired by
it (new text, where it rarely does). Paragraphs of 200-600 characters, in order; greedy, at
most 160 tokens. Standard library only.
"""
import json
import os
import sys
import threading
import time
import urllib.request


TASK = os.environ.get("TASK", "repeat")
ASK = {"repeat": "Repeat this text exactly:\n\n",
       "story": "Write a short story about a cat, loosely inspired by this text:\n\n"}


def paragraphs(path: str) -> list[str]:
    text = open(path, encoding="utf-8").read()
    out = [p.replace("\n", " ").strip() for p in text.split("\n\n")]
    return [p for p in out if 200 <= len(p) <= 600 and not p.startswith(("|", "```", "#"))]


def main() -> None:
    url, model, conc, n, passages = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    texts = paragraphs(passages)[:n]
    assert len(texts) == n, f"{len(texts)} paragraphs, {n} wanted"
    lock, results, next_i = threading.Lock(), [], [0]

    def worker() -> None:
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= n:
                return
            body = {"model": model, "temperature": 0, "max_tokens": 160,
                    "messages": [{"role": "user", "content": ASK[TASK] + texts[i]}]}
            req = urllib.request.Request(f"{url}/v1/chat/completions", data=json.dumps(body).encode(),
                                         headers={"content-type": "application/json"})
            start = time.perf_counter()
            with urllib.request.urlopen(req) as r:
                v = json.load(r)
            took = time.perf_counter() - start
            with lock:
                results.append((took, v["usage"]["completion_tokens"], v["choices"][0]["message"]["content"]))

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(conc)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    tokens = sum(r[1] for r in results)
    lat = sorted(r[0] for r in results)
    summary = {"concurrency": conc, "requests": n, "output_tokens": tokens, "wall_s": wall,
               "output_tokens_per_s": tokens / wall, "latency_p50_s": lat[len(lat) // 2],
               "answers": sorted(r[2] for r in results)}
    if len(sys.argv) > 6:
        json.dump(summary, open(sys.argv[6], "w"))
    print(f"c={conc}: {tokens} tokens in {wall:.1f} s = {tokens / wall:.1f} output tok/s, "
          f"latency p50 {summary['latency_p50_s']:.2f} s")


if __name__ == "__main__":
    main()
