"""Drives a weir server with the official `openai` Python client (run by tests/http_openai.rs).

usage: python3 tests/openai_client.py BASE_URL MODEL
"""
import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)

ids = [m.id for m in client.models.list().data]
assert model in ids, ids

question = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
chat = client.chat.completions.create(model=model, messages=question, temperature=0, max_tokens=30)
assert "Paris" in chat.choices[0].message.content, chat
assert chat.choices[0].finish_reason == "stop", chat
assert chat.usage.completion_tokens > 0, chat

stream = client.chat.completions.create(
    model=model, messages=question, temperature=0, max_tokens=30, stream=True,
    stream_options={"include_usage": True},
)
text, usage = "", None
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
    if chunk.usage:
        usage = chunk.usage
assert text == chat.choices[0].message.content, (text, chat)
assert usage is not None and usage.completion_tokens == chat.usage.completion_tokens, usage

comp = client.completions.create(model=model, prompt="The capital of France is", max_tokens=5, temperature=0)
assert comp.choices[0].text.startswith(" Paris"), comp

try:
    client.completions.create(model="no-such-model", prompt="x")
    raise AssertionError("unknown model accepted")
except openai.NotFoundError as e:
    assert e.status_code == 404

try:
    client.chat.completions.create(model=model, messages=question, temperature=5)
    raise AssertionError("temperature 5 accepted")
except openai.BadRequestError as e:
    assert e.body["param"] == "temperature", e.body

print("ok")
