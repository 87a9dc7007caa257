"""One policy's run of scripts/bench-router.sh: the shared-prefix workload through the router,
then the replicas' prefix-cache counters."""
import concurrent.futures
import random
import statistics
import sys
import time
import urllib.request

import openai

WORDS = ("river stone cloud market engine harbor lantern orchard signal timber velvet meadow "
         "copper canyon falcon garden island jungle kettle ladder mirror needle ocean pepper").split()


def system_prompt(i):
    rng = random.Random(i)
    body = " ".join(rng.choice(WORDS) for _ in range(900))
    return f"You are assistant number {i}. Reference notes: {body}"


def counter(url, name):
    text = urllib.request.urlopen(f"{url}/metrics", timeout=10).read().decode()
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name))


def main():
    base_url, model, policy, *replicas = sys.argv[1:]
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)
    systems = [system_prompt(i) for i in range(10)]
    rng = random.Random(7)
    jobs = [(rng.randrange(10), u) for u in range(160)]

    def one(job):
        s, user = job
        start = time.perf_counter()
        stream = client.chat.completions.create(
            model=model, stream=True, max_tokens=8, temperature=0,
            messages=[{"role": "system", "content": systems[s]},
                      {"role": "user", "content": f"User {user}: what is note {user % 50}?"}])
        first = None
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
        return first

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        ttfts = [t for t in pool.map(one, jobs) if t is not None]
    wall = time.perf_counter() - started
    hits = sum(counter(r, "weir:prefix_cache_hits_total") for r in replicas)
    queries = sum(counter(r, "weir:prefix_cache_queries_total") for r in replicas)
    q = statistics.quantiles(ttfts, n=100)
    print(f"| {policy} | {len(ttfts)}/{len(jobs)} | {hits / max(queries, 1):.1%} | "
          f"{statistics.median(ttfts) * 1e3:.0f} | {q[98] * 1e3:.0f} | {wall:.0f} |", flush=True)


if __name__ == "__main__":
    main()
