#!/usr/bin/env python3
"""Golden outputs: sends a fixed set of deterministic requests to a running weir server and
writes their normalised answers, one JSON object per line ({"name": ..., "response": ...},
sort_keys), in a fixed order. Two files written against two builds (e.g. before and after a
refactor) must be byte-identical; `diff` them. Standard library only (no openai package).

Usually run through scripts/golden_outputs.sh, which starts the server:

  scripts/golden_outputs.sh target/weir-088b3c1 /tmp/before.jsonl \
    && scripts/golden_outputs.sh target/release/weir /tmp/after.jsonl \
    && diff /tmp/before.jsonl /tmp/after.jsonl

or by hand against a server already running (the default model):

  python3 scripts/golden_outputs.py --url http://127.0.0.1:8000 --out /tmp/golden.jsonl

What is recorded: greedy chat (6 prompts, one at a time and then the same 6 from 8 threads at
once), greedy completions (one with logprobs 3 and echo), seeded sampling (temperature/top_p,
n=3, top_k, penalties, logit_bias + min_p), chat logprobs, a streamed chat (content,
finish_reason, usage), structured output (json_schema, guided_choice), a forced tool call,
stop strings and max_tokens 1, plus /v1/models and /tokenize + /detokenize.

Normalisation drops id-, time- and fingerprint-like fields (`id`, `created`,
`system_fingerprint`, tool call ids) everywhere (the model ids of /v1/models stay); everything
else (choices with text / message / tool_calls / logprobs / finish_reason / index, usage, model,
object) is kept. The concurrent greedy chats also drop usage.prompt_tokens_details
(cached_tokens depends on what the prefix cache holds when each request is admitted); one extra
line records whether they equal the sequential ones.

A non-200 answer is recorded as {"status": code, "error": body}, so it shows up in the diff; a
connection failure (or timeout) exits non-zero.
"""

import argparse
import concurrent.futures
import json
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 600

# Keys dropped at any depth: they change from run to run without the output changing. `id` is
# kept only in the /v1/models record, where it is the model's name.
VOLATILE_KEYS = {"id", "created", "system_fingerprint"}


class ConnectionFailed(Exception):
    pass


def normalise(v, keep_ids=False):
    drop = VOLATILE_KEYS - {"id"} if keep_ids else VOLATILE_KEYS
    if isinstance(v, dict):
        return {k: normalise(x, keep_ids) for k, x in v.items() if k not in drop}
    if isinstance(v, list):
        return [normalise(x, keep_ids) for x in v]
    return v


def _body(raw):
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def request(url, method="GET", payload=None):
    """(status, parsed body). Non-2xx answers are returned, connection failures raise."""
    data = None if payload is None else json.dumps(payload).encode()
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return resp.status, _body(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, _body(e.read())
    except (urllib.error.URLError, OSError) as e:
        raise ConnectionFailed(f"{method} {url}: {e}") from e


def recorded(status, body):
    if status != 200:
        return {"status": status, "error": normalise(body)}
    return normalise(body)


def stream_chat(url, payload):
    """Posts a streaming chat request and folds its SSE chunks into one record."""
    req = urllib.request.Request(
        url, data=json.dumps(payload).encode(), method="POST",
        headers={"Content-Type": "application/json"})
    try:
        resp = urllib.request.urlopen(req, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as e:
        return {"status": e.code, "error": normalise(_body(e.read()))}
    except (urllib.error.URLError, OSError) as e:
        raise ConnectionFailed(f"POST {url} (stream): {e}") from e
    choices = {}  # index -> {"role", "content", "finish_reason", "tool_calls"}
    usage = None
    errors = []
    done = False
    try:
        with resp:
            for raw in resp:
                line = raw.decode("utf-8").rstrip("\r\n")
                if not line.startswith("data:"):
                    continue
                data = line[len("data:"):].strip()
                if data == "[DONE]":
                    done = True
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    errors.append(normalise(chunk))
                    continue
                if chunk.get("usage") is not None:
                    usage = chunk["usage"]
                for c in chunk.get("choices") or []:
                    st = choices.setdefault(
                        c["index"], {"role": None, "content": "", "finish_reason": None})
                    delta = c.get("delta") or {}
                    if delta.get("role") is not None:
                        st["role"] = delta["role"]
                    if delta.get("content"):
                        st["content"] += delta["content"]
                    if delta.get("tool_calls"):
                        st.setdefault("tool_calls", []).extend(normalise(delta["tool_calls"]))
                    if c.get("finish_reason") is not None:
                        st["finish_reason"] = c["finish_reason"]
    except OSError as e:
        raise ConnectionFailed(f"POST {url} (stream, reading): {e}") from e
    out = {"choices": [dict(choices[i], index=i) for i in sorted(choices)],
           "usage": usage, "done": done}
    if errors:
        out["errors"] = errors
    return out


CHAT_PROMPTS = [
    "What is the capital of France? Answer in one word.",
    "Write a haiku about rivers.",
    "Explain in two sentences why the sky is blue.",
    "List three prime numbers greater than 10.",
    "Translate 'good morning' into Spanish and German.",
    "Write a Python function that returns the square of a number.",
]

COMPLETION_PROMPTS = [
    "The quick brown fox",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):",
    "The three primary colors are",
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    base = args.url.rstrip("/")
    chat_url = base + "/v1/chat/completions"
    comp_url = base + "/v1/completions"

    status, models = request(base + "/v1/models")
    if status != 200:
        sys.exit(f"GET /v1/models: {status} {models}")
    model = models["data"][0]["id"]

    records = []

    def record(name, response):
        records.append({"name": name, "response": response})

    def chat(messages, **fields):
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return recorded(*request(chat_url, "POST",
                                 dict(model=model, messages=messages, **fields)))

    def complete(prompt, **fields):
        return recorded(*request(comp_url, "POST", dict(model=model, prompt=prompt, **fields)))

    record("models", normalise(models, keep_ids=True))

    # 1. greedy chat: one at a time, then the same prompts concurrently (8 threads)
    greedy_chat = dict(temperature=0, max_tokens=48)
    sequential = [chat(p, **greedy_chat) for p in CHAT_PROMPTS]
    for i, r in enumerate(sequential):
        record(f"chat_greedy_sequential_{i}", r)
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        concurrent_ = list(pool.map(lambda p: chat(p, **greedy_chat), CHAT_PROMPTS))

    def without_cache_details(r):
        r = json.loads(json.dumps(r))
        if isinstance(r.get("usage"), dict):
            r["usage"].pop("prompt_tokens_details", None)
        return r

    for i, r in enumerate(concurrent_):
        record(f"chat_greedy_concurrent_{i}", without_cache_details(r))
    record("chat_greedy_concurrent_equals_sequential",
           [without_cache_details(a) == without_cache_details(b)
            for a, b in zip(sequential, concurrent_)])

    # 2. greedy completions; the first with logprobs 3 and echo
    for i, p in enumerate(COMPLETION_PROMPTS):
        extra = dict(logprobs=3, echo=True) if i == 0 else {}
        record(f"completion_greedy_{i}", complete(p, temperature=0, max_tokens=32, **extra))

    # 3. seeded sampling
    story = "Tell me a short story about a robot who learns to paint."
    record("chat_seeded_top_p",
           chat(story, temperature=0.8, top_p=0.9, seed=1234, max_tokens=40))
    record("chat_seeded_top_p_n3",
           chat(story, temperature=0.8, top_p=0.9, seed=1234, max_tokens=40, n=3))
    record("completion_seeded_top_k",
           complete("In the year 2050, cities will", temperature=1.0, top_k=20, seed=7,
                    max_tokens=32))
    record("completion_seeded_penalties",
           complete("My favourite foods are", temperature=0.7, seed=9, max_tokens=32,
                    presence_penalty=0.5, frequency_penalty=0.3, repetition_penalty=1.1))
    # 253 is " a" (banned), 314 " is" (favoured): the text differs from the unbiased one
    record("completion_seeded_logit_bias_min_p",
           complete("The weather today is", temperature=0.9, seed=11, max_tokens=32,
                    min_p=0.1, logit_bias={"253": -100, "314": 5}))

    # 4. chat logprobs (greedy)
    record("chat_logprobs",
           chat("Name a colour of the rainbow.", temperature=0, max_tokens=16, logprobs=True,
                top_logprobs=2))

    # 5. streaming chat (greedy) with usage
    record("chat_stream", stream_chat(chat_url, dict(
        model=model, messages=[{"role": "user", "content": "Write a haiku about rivers."}],
        temperature=0, max_tokens=48, stream=True, stream_options={"include_usage": True})))

    # 6. structured output
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 20},
                       "age": {"type": "integer"}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    record("chat_json_schema",
           chat("Describe a person as JSON with a name and an age.", temperature=0,
                max_tokens=64,
                response_format={"type": "json_schema",
                                 "json_schema": {"name": "person", "schema": schema}}))
    record("chat_guided_choice",
           chat("Is the sentiment of 'I love this film' positive or negative?", temperature=0,
                max_tokens=8, guided_choice=["positive", "negative", "neutral"]))

    # 7. tools, forced call (greedy)
    tools = [{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"},
                               "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
                "required": ["city"],
            },
        },
    }]
    record("chat_tool_required",
           chat("What is the weather like in Paris?", temperature=0, max_tokens=64,
                tools=tools, tool_choice="required"))

    # 8. stop string, max_tokens 1
    record("chat_stop",
           chat("Explain in two sentences why the sky is blue.", temperature=0, max_tokens=48,
                stop=["."]))
    record("completion_stop",
           complete("Once upon a time, in a small village by the sea,", temperature=0,
                    max_tokens=32, stop=["."]))
    record("chat_max_tokens_1",
           chat("What is the capital of France?", temperature=0, max_tokens=1))

    # tokenizer endpoints
    status, tok = request(base + "/tokenize", "POST",
                          {"model": model, "prompt": "Hello, world! The quick brown fox."})
    record("tokenize", recorded(status, tok))
    if status == 200 and isinstance(tok, dict) and "tokens" in tok:
        record("detokenize", recorded(*request(base + "/detokenize", "POST",
                                               {"model": model, "tokens": tok["tokens"]})))

    with open(args.out, "w") as f:
        for r in records:
            f.write(json.dumps(r, sort_keys=True) + "\n")
    errors = sum(1 for r in records
                 if isinstance(r["response"], dict) and "status" in r["response"])
    print(f"wrote {len(records)} records to {args.out} ({errors} non-200)", file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except ConnectionFailed as e:
        sys.exit(f"golden_outputs.py: connection failed: {e}")
