"""Validates weir's real responses against the shapes of OpenAI's published API specification
(openai/openai-openapi: CreateChatCompletionResponse, CreateChatCompletionStreamResponse,
CreateCompletionResponse, ListModelsResponse / Model, ErrorResponse), run by tests/http_wire.rs.

The schemas below are weir's own JSON-Schema transcription of what the specification requires:
the required keys (present even when null), their types and nullability, and the enums.

usage: python3 tests/openai_wire.py BASE_URL MODEL
"""
import json
import sys
import urllib.error
import urllib.request

import jsonschema

base, model = sys.argv[1:3]

S, I, N, B = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
NULL_S = {"type": ["string", "null"]}


def obj(required, props, extra=True):
    return {"type": "object", "required": required, "properties": props,
            "additionalProperties": extra}


USAGE = obj(["prompt_tokens", "completion_tokens", "total_tokens"],
            {"prompt_tokens": I, "completion_tokens": I, "total_tokens": I,
             "prompt_tokens_details": obj([], {"cached_tokens": I})})
TOP = obj(["token", "logprob", "bytes"],
          {"token": S, "logprob": N, "bytes": {"type": ["array", "null"], "items": I}})
TOKEN_LOGPROB = obj(["token", "logprob", "bytes", "top_logprobs"],
                    {"token": S, "logprob": N,
                     "bytes": {"type": ["array", "null"], "items": I},
                     "top_logprobs": {"type": "array", "items": TOP}})
CHAT_LOGPROBS = {"type": ["object", "null"], "required": ["content", "refusal"],
                 "properties": {"content": {"type": ["array", "null"], "items": TOKEN_LOGPROB},
                                "refusal": {"type": ["array", "null"], "items": TOKEN_LOGPROB}}}
TOOL_CALL = obj(["id", "type", "function"],
                {"id": S, "type": {"enum": ["function"]},
                 "function": obj(["name", "arguments"], {"name": S, "arguments": S})})
CHAT = obj(["id", "object", "created", "model", "choices"], {
    "id": S, "object": {"enum": ["chat.completion"]}, "created": I, "model": S, "usage": USAGE,
    "choices": {"type": "array", "items": obj(["index", "message", "finish_reason", "logprobs"], {
        "index": I,
        "finish_reason": {"enum": ["stop", "length", "tool_calls", "content_filter",
                                   "function_call"]},
        "logprobs": CHAT_LOGPROBS,
        "message": obj(["role", "content", "refusal"], {
            "role": {"enum": ["assistant"]}, "content": NULL_S, "refusal": NULL_S,
            "tool_calls": {"type": "array", "items": TOOL_CALL}}),
    })},
})
TOOL_CALL_CHUNK = obj(["index"], {
    "index": I, "id": S, "type": {"enum": ["function"]},
    "function": obj([], {"name": S, "arguments": S})})
CHAT_CHUNK = obj(["id", "object", "created", "model", "choices"], {
    "id": S, "object": {"enum": ["chat.completion.chunk"]}, "created": I, "model": S,
    "usage": {"anyOf": [USAGE, {"type": "null"}]},
    "choices": {"type": "array", "items": obj(["index", "delta", "finish_reason"], {
        "index": I,
        "finish_reason": {"enum": ["stop", "length", "tool_calls", "content_filter",
                                   "function_call", None]},
        "logprobs": CHAT_LOGPROBS,
        "delta": obj([], {"role": {"enum": ["developer", "system", "user", "assistant", "tool"]},
                          "content": NULL_S, "refusal": NULL_S,
                          "tool_calls": {"type": "array", "items": TOOL_CALL_CHUNK}}),
    })},
})
COMPLETION_LOGPROBS = {"type": ["object", "null"], "properties": {
    "tokens": {"type": "array", "items": S},
    "token_logprobs": {"type": "array", "items": {"type": ["number", "null"]}},
    "top_logprobs": {"type": "array",
                     "items": {"type": ["object", "null"], "additionalProperties": N}},
    "text_offset": {"type": "array", "items": I}}}
COMPLETION = obj(["id", "object", "created", "model", "choices"], {
    "id": S, "object": {"enum": ["text_completion"]}, "created": I, "model": S,
    "usage": {"anyOf": [USAGE, {"type": "null"}]},
    "choices": {"type": "array", "items": obj(["index", "text", "logprobs", "finish_reason"], {
        "index": I, "text": S, "logprobs": COMPLETION_LOGPROBS,
        "finish_reason": {"enum": ["stop", "length", "content_filter", None]},
    })},
})
MODEL = obj(["id", "object", "created", "owned_by"],
            {"id": S, "object": {"enum": ["model"]}, "created": I, "owned_by": S})
MODELS = obj(["object", "data"], {"object": {"enum": ["list"]},
                                  "data": {"type": "array", "items": MODEL}})
ERROR = obj(["error"], {"error": obj(["type", "message", "param", "code"], {
    "type": S, "message": S, "param": NULL_S, "code": NULL_S})})


def call(path, body=None):
    req = urllib.request.Request(base + path, json.dumps(body).encode() if body else None,
                                 {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def events(text):
    out = [line[6:] for line in text.splitlines() if line.startswith("data: ")]
    assert out[-1] == "[DONE]", out[-1]
    return [json.loads(e) for e in out[:-1]]


checked = 0
def check(value, schema):
    global checked
    jsonschema.validate(value, schema)
    checked += 1


q = [{"role": "user", "content": "What is the capital of France?"}]
tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
    "required": ["city"]}}}]
for body in [
    {"model": model, "messages": q, "max_tokens": 8},
    {"model": model, "messages": q, "max_tokens": 8, "logprobs": True, "top_logprobs": 2, "n": 2},
    {"model": model, "messages": q, "max_tokens": 60, "tools": tools, "tool_choice": "required"},
]:
    status, text = call("/v1/chat/completions", body)
    assert status == 200, text
    check(json.loads(text), CHAT)
    status, text = call("/v1/chat/completions", dict(body, stream=True,
                                                     stream_options={"include_usage": True}))
    assert status == 200, text
    chunks = events(text)
    for c in chunks:
        check(c, CHAT_CHUNK)
    assert all("usage" in c for c in chunks), "include_usage: every chunk has the key"
for body in [
    {"model": model, "prompt": "The capital of France is", "max_tokens": 5},
    {"model": model, "prompt": ["One,", "Two,"], "max_tokens": 5, "logprobs": 2, "echo": True},
]:
    status, text = call("/v1/completions", body)
    assert status == 200, text
    check(json.loads(text), COMPLETION)
    status, text = call("/v1/completions", dict(body, stream=True))
    for c in events(text):
        check(c, COMPLETION)
status, text = call("/v1/models")
check(json.loads(text), MODELS)
status, text = call(f"/v1/models/{model}")
check(json.loads(text), MODEL)
for path, body, code in [
    ("/v1/chat/completions", {"model": model, "messages": q, "temperature": 9}, 400),
    ("/v1/completions", {"model": "no-such-model", "prompt": "x"}, 404),
    ("/v1/chat/completions", {"model": model}, 400),
]:
    status, text = call(path, body)
    assert status == code, (status, text)
    check(json.loads(text), ERROR)
print(f"ok: {checked} responses valid")
