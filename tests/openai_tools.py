"""Tool calling through the official `openai` Python client (run by tests/http_tools.rs).

usage: python3 tests/openai_tools.py BASE_URL SMOL HERMES_TINY LLAMA3_TINY

SmolLM2 (its template does not render tools: weir describes them in a system message, Hermes
format): tool_choice "required" and a named function give calls whose arguments validate
against the function's schema, streamed (tool-call deltas) and not, with finish_reason
"tool_calls"; the calls go back in the conversation with the tool's answer. The tiny models
(templates that render tools themselves, in the Hermes and Llama 3 formats) give forced calls
parsed from their own format.
"""
import json
import sys

import jsonschema
import openai

base_url, smol, hermes, llama3 = sys.argv[1:5]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "enum": ["Paris", "Oslo", "Tokyo"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "days"],
            "additionalProperties": False,
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a timezone.",
        "parameters": {
            "type": "object",
            "properties": {"tz": {"type": "string", "enum": ["UTC", "CET"]}},
            "required": ["tz"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [WEATHER, TIME]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
question = [{"role": "user", "content": "What is the weather in Paris for the next 3 days?"}]


def check_calls(calls, names):
    assert calls, "no tool calls"
    for c in calls:
        assert c.type == "function", c
        assert c.function.name in names, c
        jsonschema.validate(json.loads(c.function.arguments), SCHEMAS[c.function.name])
        assert c.id, c


for model in (smol, hermes, llama3):
    for choice, names in [("required", {"get_weather", "get_time"}),
                          ({"type": "function", "function": {"name": "get_time"}}, {"get_time"})]:
        r = client.chat.completions.create(
            model=model, messages=question, tools=TOOLS, tool_choice=choice, max_tokens=300,
            temperature=0,
        )
        c = r.choices[0]
        assert c.finish_reason == "tool_calls", (model, r)
        check_calls(c.message.tool_calls, names)

        # streamed: tool-call deltas put together by index
        calls, finish = {}, None
        for chunk in client.chat.completions.create(
            model=model, messages=question, tools=TOOLS, tool_choice=choice, max_tokens=300,
            temperature=0, stream=True,
        ):
            for ch in chunk.choices:
                for d in ch.delta.tool_calls or []:
                    slot = calls.setdefault(d.index, {"name": "", "arguments": "", "id": d.id})
                    slot["name"] += d.function.name or ""
                    slot["arguments"] += d.function.arguments or ""
                finish = ch.finish_reason or finish
        assert finish == "tool_calls", (model, finish)
        assert [(v["name"], json.loads(v["arguments"])) for _, v in sorted(calls.items())] == [
            (t.function.name, json.loads(t.function.arguments)) for t in c.message.tool_calls
        ], (model, calls)

# the round trip: the call and the tool's answer go back in
r = client.chat.completions.create(
    model=smol, messages=question, tools=TOOLS, tool_choice="required", max_tokens=300,
    temperature=0,
)
call = r.choices[0].message.tool_calls[0]
follow = question + [
    {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
    {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 18})},
]
again = client.chat.completions.create(model=smol, messages=follow, tools=TOOLS, max_tokens=60,
                                       temperature=0)
m = again.choices[0].message
assert m.content or m.tool_calls, again

# auto: whatever the model writes comes back well-formed
auto = client.chat.completions.create(model=smol, messages=question, tools=TOOLS, max_tokens=120,
                                      temperature=0)
m = auto.choices[0]
if m.message.tool_calls:
    assert m.finish_reason == "tool_calls"
    for t in m.message.tool_calls:
        json.loads(t.function.arguments)
else:
    assert m.message.content, auto

# errors
for kwargs, param in [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {}}]}, "tools[0]"),
]:
    try:
        client.chat.completions.create(model=smol, messages=question, max_tokens=5, **kwargs)
        raise AssertionError(f"accepted {kwargs}")
    except openai.BadRequestError as e:
        assert e.body["param"] == param, e.body

print("ok")
