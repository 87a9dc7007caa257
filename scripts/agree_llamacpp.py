"""The comparison of scripts/agree-llamacpp.sh: weir (model id "m") and llama-server on one
GGUF, fed the same token ids.

usage: python3 scripts/agree_llamacpp.py WEIR_URL LLAMA_URL TEXT_FILE
"""
import json
import sys
import urllib.request

weir, llama, text_file = sys.argv[1:4]
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


agree = []
for p in PROMPTS:
    ids = weir_tokens(messages=[{"role": "user", "content": p}])
    w, l = weir_greedy(ids), llama_greedy(ids, NEW_TOKENS)
    agree.append(leading_agreement(w, l))
full = sum(a == NEW_TOKENS for a in agree)
print(f"greedy, {len(PROMPTS)} chat prompts x {NEW_TOKENS} tokens: all {NEW_TOKENS} agree on "
      f"{full}/{len(PROMPTS)}; leading tokens in agreement per prompt: {agree}")

text = open(text_file).read()
ids = weir_tokens(prompt=text)[: POSITIONS + 1]
r = post(
    f"{weir}/v1/completions",
    {"model": "m", "prompt": ids, "max_tokens": 1, "temperature": 0, "prompt_logprobs": 1},
)
weir_top = []
for entry in r["choices"][0]["prompt_logprobs"][1:]:
    weir_top.append(next(int(t) for t, v in entry.items() if v["rank"] == 1))
same = 0
for i in range(1, len(ids)):
    llama_top = llama_greedy(ids[:i], 1)[0]
    same += llama_top == weir_top[i - 1]
n = len(ids) - 1
print(f"teacher-forced top-1 over {n} positions of {text_file}: {same}/{n} agree "
      f"({100 * same / n:.2f}%)")
