"""Reasoning parsers and chat_template_kwargs through the official `openai` Python client (run
by tests/http_reasoning.rs).

usage: python3 tests/openai_reasoning.py QWEN3_URL R1_URL PLAIN_URL

Each URL is a weir server of SmolLM2 ("smol") and a tiny model whose chat template reads
`enable_thinking` ("thinker"): QWEN3_URL with `--reasoning-parser qwen3`, R1_URL with
`deepseek_r1`, PLAIN_URL without one. SmolLM2 is made to think by guided_regex (its output is
`<think>...</think>` then an answer), so the split is known: `message.reasoning_content` holds
the think text, `content` the answer, whole and streamed (`delta.reasoning_content`); without a
parser the text is untouched. `chat_template_kwargs` reach the template (the prompt grows by the
empty think block `enable_thinking: false` writes) and may not replace `messages`. With a parser,
structured output holds after the think block (a tiny model with a `</think>` token, "closer"):
from its `</think>` on, or from the start when the prompt closed the block.
"""
import re
import sys

import openai

qwen3_url, r1_url, plain_url = sys.argv[1:4]
MESSAGES = [{"role": "user", "content": "Think, then answer with a short word."}]


def client(url):
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0)


def ask(url, regex, stream=False):
    """(reasoning, content) of SmolLM2's greedy answer held to `regex`."""
    kw = dict(
        model="smol",
        messages=MESSAGES,
        max_tokens=80,
        temperature=0,
        extra_body={"guided_regex": regex},
    )
    if not stream:
        m = client(url).chat.completions.create(**kw).choices[0].message
        return getattr(m, "reasoning_content", None), m.content
    reasoning, content = "", ""
    for chunk in client(url).chat.completions.create(stream=True, **kw):
        if not chunk.choices:
            continue
        d = chunk.choices[0].delta
        reasoning += getattr(d, "reasoning_content", None) or ""
        content += d.content or ""
    return reasoning or None, content or None


THINK = r"<think>[a-z]{3,8}</think>[a-z]{2,6}"
# qwen3: the think block becomes reasoning_content, whole and streamed alike
r, c = ask(qwen3_url, THINK)
assert r is not None and re.fullmatch(r"[a-z]{3,8}", r), (r, c)
assert c is not None and re.fullmatch(r"[a-z]{2,6}", c), (r, c)
assert ask(qwen3_url, THINK, stream=True) == (r, c), ask(qwen3_url, THINK, stream=True)
# without the parser: the same text, untouched
r0, c0 = ask(plain_url, THINK)
assert r0 is None and c0 == f"<think>{r}</think>{c}", (r0, c0, r, c)
# qwen3 without a think block: all answer
r, c = ask(qwen3_url, r"[a-z]{2,6}")
assert r is None and re.fullmatch(r"[a-z]{2,6}", c), (r, c)
# deepseek_r1: the output starts inside the block the template opened
R1 = r"[a-z]{3,8}</think>[a-z]{2,6}"
r, c = ask(r1_url, R1)
assert re.fullmatch(r"[a-z]{3,8}", r) and re.fullmatch(r"[a-z]{2,6}", c), (r, c)
assert ask(r1_url, R1, stream=True) == (r, c)
# an unclosed block is all reasoning
r, c = ask(r1_url, r"[a-z]{3,8}")
assert re.fullmatch(r"[a-z]{3,8}", r) and c is None, (r, c)


def prompt_tokens(kwargs):
    extra = {} if kwargs is None else {"chat_template_kwargs": kwargs}
    resp = client(plain_url).chat.completions.create(
        model="thinker", messages=MESSAGES, max_tokens=1, extra_body=extra
    )
    return resp.usage.prompt_tokens


base = prompt_tokens(None)
assert prompt_tokens({"enable_thinking": True}) == base
# one token per byte: the template's "<think></think>" adds 15
assert prompt_tokens({"enable_thinking": False}) == base + 15, (base, prompt_tokens({"enable_thinking": False}))
try:
    prompt_tokens({"messages": []})
    raise AssertionError("chat_template_kwargs.messages accepted")
except openai.BadRequestError as e:
    assert e.body["param"] == "chat_template_kwargs", e.body


def choice(url, kwargs=None):
    """The "closer" model held to yes/no, its `</think>` token (257) pushed up by logit_bias."""
    extra = {"guided_choice": ["yes", "no"], "logit_bias": {"257": 100}}
    if kwargs:
        extra["chat_template_kwargs"] = kwargs
    m = client(url).chat.completions.create(
        model="closer", messages=MESSAGES, max_tokens=8, temperature=0, extra_body=extra
    ).choices[0].message
    return getattr(m, "reasoning_content", None), m.content


# the grammar waits for </think>: the model closes its (empty) think block, then answers
assert choice(r1_url) in ((None, "yes"), (None, "no")), choice(r1_url)
# the prompt closed the block already (thinking off): the grammar holds from the first token
assert choice(qwen3_url, {"enable_thinking": False}) in ((None, "yes"), (None, "no"))
# no parser: the grammar holds from the first token, </think> is never allowed
assert choice(plain_url)[1] in ("yes", "no"), choice(plain_url)
print("reasoning parsers and chat_template_kwargs: ok")
