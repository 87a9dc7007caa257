"""The comparison of scripts/agree-llamacpp.sh: weir (model id "m") and llama-server on one
GGUF, fed the same token ids.

usage: python3 scripts/agree_llamacpp.py WEIR_URL LLAMA_URL TEXT_FILE [GGUF]

With GGUF (and transformers + torch importable), a third opinion: transformers on the GGUF's
weights dequantized to float32 (no quantized activations, f32 KV), on the same tokens; each
server's agreement with it says whose numerics the disagreements come from.
"""
import json
import sys
import urllib.request

weir, llama, text_file = sys.argv[1:4]
gguf = sys.argv[4] if len(sys.argv) > 4 else None
NEW_TOKENS = 16
POSITIONS = 2000

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain photosynthesis to a ten-year-old.",
    "List three prime numbers greater than 50.",
    "Translate 'good morning' into Spanish and German.",
    "What does a compiler do?",
    "Give me a recipe idea that uses lentils.",
    "Why is the sky blue?",
    "Summarize the plot of Romeo and Juliet in two sentences.",
    "How many legs does a spider have?",
    "Write a Python function that reverses a string.",
    "What is the difference between weather and climate?",
    "Suggest a name for a friendly robot.",
    "Describe the taste of a lemon.",
    "What year did the first person walk on the Moon?",
    "Convert 100 degrees Fahrenheit to Celsius.",
    "Tell me a fun fact about octopuses.",
    "What is 17 times 23?",
    "Write the opening line of a mystery novel.",
    "Which is heavier, a kilogram of feathers or a kilogram of steel?",
]


def post(url, body):
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"content-type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.load(r)


def weir_tokens(messages=None, prompt=None):
    body = {"model": "m"}
    if messages is not None:
        body["messages"] = messages
    else:
        body["prompt"] = prompt
    return post(f"{weir}/tokenize", body)["tokens"]


def weir_greedy(ids):
    r = post(
        f"{weir}/v1/completions",
        {"model": "m", "prompt": ids, "max_tokens": NEW_TOKENS, "temperature": 0,
         "ignore_eos": True, "logprobs": 0, "return_tokens_as_token_ids": True},
    )
    return [int(t.split(":")[1]) for t in r["choices"][0]["logprobs"]["tokens"]]


def llama_greedy(ids, n):
    r = post(
        f"{llama}/completion",
        {"prompt": ids, "n_predict": n, "temperature": 0, "top_k": 1, "ignore_eos": True,
         "return_tokens": True, "cache_prompt": True},
    )
    return r["tokens"]


def leading_agreement(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def reference():
    """transformers on the dequantized GGUF, or None."""
    if gguf is None:
        return None
    try:
        import os
        import torch
        from transformers import AutoModelForCausalLM
    except ImportError:
        return None
    d, f = os.path.split(gguf)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=f, dtype=torch.float32).eval()
    torch.set_num_threads(os.cpu_count() or 1)

    def greedy(ids, n):
        out = list(ids)
        with torch.no_grad():
            for _ in range(n):
                logits = model(torch.tensor([out])).logits[0, -1]
                out.append(int(logits.argmax()))
        return out[len(ids):]

    def top1(ids):
        with torch.no_grad():
            return model(torch.tensor([ids])).logits[0].argmax(-1).tolist()

    return greedy, top1


ref = reference()
agree, ref_weir, ref_llama = [], [], []
for p in PROMPTS:
    ids = weir_tokens(messages=[{"role": "user", "content": p}])
    w, l = weir_greedy(ids), llama_greedy(ids, NEW_TOKENS)
    agree.append(leading_agreement(w, l))
    if ref:
        t = ref[0](ids, NEW_TOKENS)
        ref_weir.append(leading_agreement(w, t))
        ref_llama.append(leading_agreement(l, t))
full = sum(a == NEW_TOKENS for a in agree)
print(f"greedy, {len(PROMPTS)} chat prompts x {NEW_TOKENS} tokens: all {NEW_TOKENS} agree on "
      f"{full}/{len(PROMPTS)}; leading tokens in agreement per prompt: {agree}")
if ref:
    for name, a in (("weir", ref_weir), ("llama-server", ref_llama)):
        print(f"  {name} vs transformers (f32, dequantized): all {NEW_TOKENS} agree on "
              f"{sum(x == NEW_TOKENS for x in a)}/{len(PROMPTS)}; per prompt: {a}")

text = open(text_file).read()
ids = weir_tokens(prompt=text)[: POSITIONS + 1]
r = post(
    f"{weir}/v1/completions",
    {"model": "m", "prompt": ids, "max_tokens": 1, "temperature": 0, "prompt_logprobs": 1},
)
weir_top = []
for entry in r["choices"][0]["prompt_logprobs"][1:]:
    weir_top.append(next(int(t) for t, v in entry.items() if v["rank"] == 1))
llama_top = [llama_greedy(ids[:i], 1)[0] for i in range(1, len(ids))]
n = len(ids) - 1


def rate(a, b):
    same = sum(x == y for x, y in zip(a, b))
    return f"{same}/{n} agree ({100 * same / n:.2f}%)"


print(f"teacher-forced top-1 over {n} positions of {text_file}: weir vs llama-server "
      f"{rate(weir_top, llama_top)}")
if ref:
    ref_top = ref[1](ids)[:-1]
    print(f"  weir vs transformers (f32, dequantized): {rate(weir_top, ref_top)}")
    print(f"  llama-server vs transformers: {rate(llama_top, ref_top)}")
