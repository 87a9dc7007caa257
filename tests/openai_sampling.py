"""Sampling parameters through the official `openai` Python client (run by tests/http_sampling.rs).

usage: python3 tests/openai_sampling.py BASE_URL SMOL_MODEL TINY_MODEL

On SmolLM2: chat and completions logprobs in OpenAI's shapes, streamed = not streamed; a
frequency penalty stops a repetition. On the tiny random model, with vLLM's
`return_tokens_as_token_ids`, the logprobs it reports predict the output exactly: frequency and
presence penalties, `logit_bias` at the margin, `min_p` 1 = greedy; a seeded request gives the
same tokens alone and among 31 others. `n` choices equal single requests seeded seed + i.
"""
import concurrent.futures as cf
import sys
from collections import Counter

import openai

base_url, smol, tiny = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
EPS = 1e-5

# ---- SmolLM2: chat logprobs
question = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
chat = client.chat.completions.create(
    model=smol, messages=question, temperature=0, max_tokens=12, logprobs=True, top_logprobs=5
)
choice = chat.choices[0]
content = choice.logprobs.content
assert len(content) == chat.usage.completion_tokens, (len(content), chat.usage)
assert choice.message.content in "".join(t.token for t in content), chat
for t in content:
    assert t.bytes == list(t.token.encode()), t
    assert len(t.top_logprobs) == 5, t
    values = [a.logprob for a in t.top_logprobs]
    assert values == sorted(values, reverse=True), t
    assert abs(t.logprob - values[0]) < EPS, "greedy takes the most likely token"
    assert all(v <= 0 for v in values), t

stream = client.chat.completions.create(
    model=smol, messages=question, temperature=0, max_tokens=12, logprobs=True, top_logprobs=5,
    stream=True,
)
streamed = []
for chunk in stream:
    if chunk.choices and chunk.choices[0].logprobs:
        streamed.extend(chunk.choices[0].logprobs.content)
assert [(t.token, t.logprob) for t in streamed] == [(t.token, t.logprob) for t in content], (
    [(t.token, t.logprob) for t in streamed], [(t.token, t.logprob) for t in content])

plain = client.chat.completions.create(model=smol, messages=question, temperature=0, max_tokens=12)
assert plain.choices[0].logprobs is None
assert plain.choices[0].message.content == choice.message.content, "logprobs do not change output"

# ---- SmolLM2: completions logprobs
comp = client.completions.create(
    model=smol, prompt="The capital of France is", max_tokens=5, temperature=0, logprobs=3
)
lp = comp.choices[0].logprobs
assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 5
assert "".join(lp.tokens) == comp.choices[0].text, (lp.tokens, comp.choices[0].text)
offset = 0
for tok, off, top, value in zip(lp.tokens, lp.text_offset, lp.top_logprobs, lp.token_logprobs):
    assert off == offset, lp.text_offset
    offset += len(tok)
    assert 1 <= len(top) <= 3, top
    assert abs(max(top.values()) - value) < EPS, (top, value)
streamed = {"tokens": [], "logprobs": [], "offsets": []}
for chunk in client.completions.create(
    model=smol, prompt="The capital of France is", max_tokens=5, temperature=0, logprobs=3,
    stream=True,
):
    if chunk.choices and chunk.choices[0].logprobs:
        s = chunk.choices[0].logprobs
        streamed["tokens"] += s.tokens
        streamed["logprobs"] += s.token_logprobs
        streamed["offsets"] += s.text_offset
assert streamed == {"tokens": lp.tokens, "logprobs": lp.token_logprobs, "offsets": lp.text_offset}

# ---- SmolLM2: penalties break a repetition
def most_repeated(**kw):
    """How often the most frequent output token of a looping greedy completion occurs."""
    r = client.completions.create(
        model=smol, prompt="cat cat cat cat cat cat cat cat", temperature=0, max_tokens=24,
        logprobs=0, **kw
    )
    return max(Counter(r.choices[0].logprobs.tokens).values())
base = most_repeated()
assert base >= 8, base
assert most_repeated(frequency_penalty=2.0) < base, "frequency_penalty breaks the loop"
assert most_repeated(presence_penalty=2.0, extra_body={"repetition_penalty": 1.5, "min_p": 0.05}) < base

# ---- n: choices of one prompt, seeds seed + i, the prompt counted once
def single(seed):
    return client.chat.completions.create(
        model=smol, messages=question, temperature=1.0, max_tokens=8, seed=seed
    )
many = client.chat.completions.create(
    model=smol, messages=question, temperature=1.0, max_tokens=8, seed=11, n=3
)
assert [c.index for c in many.choices] == [0, 1, 2], many
alone = [single(11 + i) for i in range(3)]
for c, a in zip(many.choices, alone):
    assert c.message.content == a.choices[0].message.content, (c, a)
assert many.usage.prompt_tokens == alone[0].usage.prompt_tokens, many.usage
assert many.usage.completion_tokens == sum(a.usage.completion_tokens for a in alone)
texts = {0: "", 1: "", 2: ""}
for chunk in client.chat.completions.create(
    model=smol, messages=question, temperature=1.0, max_tokens=8, seed=11, n=3, stream=True
):
    for c in chunk.choices:
        texts[c.index] += c.delta.content or ""
assert [texts[i] for i in range(3)] == [c.message.content for c in many.choices], texts
two = client.completions.create(
    model=smol, prompt=["The capital of France is", "One, two,"], max_tokens=4, temperature=0, n=2
)
assert [c.index for c in two.choices] == [0, 1, 2, 3], two
assert two.choices[0].text == two.choices[1].text, "greedy choices agree"
assert two.choices[2].text == client.completions.create(
    model=smol, prompt="One, two,", max_tokens=4, temperature=0
).choices[0].text

# ---- tiny model: exact checks from its own logprobs
prompt = [(i * 37 + 11) % 256 for i in range(23)]
def tiny_run(max_tokens, **kw):
    extra = kw.pop("extra_body", {})
    extra.update(return_tokens_as_token_ids=True, ignore_eos=True)
    r = client.completions.create(
        model=tiny, prompt=prompt, max_tokens=max_tokens, logprobs=20, extra_body=extra,
        **{"temperature": 0, **kw},
    )
    return r.choices[0].logprobs

def tid(name):
    assert name.startswith("token_id:"), name
    return int(name.split(":")[1])

# frequency and presence penalties: each step's choice is the argmax of the raw logprobs minus
# the penalties of the tokens generated before it
FREQ, PRES = 1.3, 0.4
run = tiny_run(24, frequency_penalty=FREQ, presence_penalty=PRES)
seen, checked, changed = Counter(), 0, 0
for tok, top in zip(run.tokens, run.top_logprobs):
    raw = {tid(k): v for k, v in top.items()}
    adjusted = {t: v - FREQ * seen[t] - PRES * (seen[t] > 0) for t, v in raw.items()}
    best = max(adjusted, key=lambda t: (adjusted[t], -t))
    # tokens outside the top 20 are at most the 20th raw value, and penalties only lower
    if adjusted[best] > min(raw.values()):
        assert tid(tok) == best, (tok, best, adjusted)
        checked += 1
        changed += best != max(raw, key=raw.get)
    seen[tid(tok)] += 1
assert checked >= 12 and changed >= 1, (checked, changed, run.tokens)

# logit_bias at the margin between the two most likely first tokens
first = tiny_run(1).top_logprobs[0]
(t1, l1), (t2, l2) = sorted(((tid(k), v) for k, v in first.items()), key=lambda e: -e[1])[:2]
gap = l1 - l2
assert tid(tiny_run(1, logit_bias={str(t2): gap + 0.01}).tokens[0]) == t2
assert tid(tiny_run(1, logit_bias={str(t2): gap - 0.01}).tokens[0]) == t1
forced = tiny_run(8, logit_bias={"65": 100})
assert forced.tokens == ["token_id:65"] * 8, forced.tokens

# min_p 1 keeps only the most likely token: sampling at temperature 1 is greedy
greedy = tiny_run(16).tokens
assert tiny_run(16, temperature=1.0, seed=3, extra_body={"min_p": 1.0}).tokens == greedy

# echo and prompt logprobs: the prompt's tokens come first, the first without a logprob; vLLM's
# prompt_logprobs agree with them
def echo_run(stream):
    kw = dict(model=tiny, prompt=prompt, max_tokens=4, temperature=0, logprobs=2, echo=True,
              extra_body={"return_tokens_as_token_ids": True, "prompt_logprobs": 2,
                          "ignore_eos": True})
    if not stream:
        c = client.completions.create(**kw).choices[0]
        return c.logprobs.tokens, c.logprobs.token_logprobs, c.logprobs.text_offset, c.model_extra["prompt_logprobs"]
    toks, lps, offs, pl = [], [], [], None
    for chunk in client.completions.create(stream=True, **kw):
        for c in chunk.choices:
            if c.logprobs:
                toks += c.logprobs.tokens
                lps += c.logprobs.token_logprobs
                offs += c.logprobs.text_offset
            pl = (c.model_extra or {}).get("prompt_logprobs") or pl
    return toks, lps, offs, pl
toks, lps, offs, pl = echo_run(False)
assert toks[:len(prompt)] == [f"token_id:{t}" for t in prompt], toks
assert len(toks) == len(prompt) + 4 and lps[0] is None and all(v is not None for v in lps[1:])
assert pl[0] is None and len(pl) == len(prompt), pl
for p in range(1, len(prompt)):
    entry = pl[p][str(prompt[p])]
    assert abs(entry["logprob"] - lps[p]) < EPS, (p, entry, lps[p])
    assert entry["rank"] >= 1
    assert len(pl[p]) >= 2  # the prompt token and the top 2 (which may include it)
assert echo_run(True) == (toks, lps, offs, pl)
echoed = client.completions.create(model=smol, prompt="The capital of France is", max_tokens=3,
                                   temperature=0, echo=True)
assert echoed.choices[0].text.startswith("The capital of France is"), echoed
assert len(echoed.choices[0].text) > len("The capital of France is")

# seeds: alone and among 31 others
def seeded(seed):
    return tiny_run(16, temperature=1.0, seed=seed).tokens
alone = seeded(42)
with cf.ThreadPoolExecutor(32) as pool:
    runs = list(pool.map(seeded, [42] + list(range(1000, 1031))))
assert runs[0] == alone, (runs[0], alone)
assert len({tuple(r) for r in runs}) > 16, "different seeds give different samples"

print("ok")
