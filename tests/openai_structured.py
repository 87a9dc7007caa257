"""Constrained decoding through the official `openai` Python client (run by
tests/http_structured.rs).

usage: python3 tests/openai_structured.py BASE_URL MODEL

SmolLM2's outputs under `response_format` json_schema (nested objects, enums, arrays, required
fields) parse and validate, streamed and not, with 20 constrained requests running at once
beside 20 unconstrained ones; json_object gives an object; vLLM's guided_choice and guided_regex
hold; constrained choices of `n` each hold.
"""
import concurrent.futures as cf
import json
import re
import sys

import jsonschema
import openai

base_url, model = sys.argv[1:3]
client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)

SCHEMAS = {
    "person": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 40},
            "age": {"type": "integer", "minimum": 0, "maximum": 150},
            "role": {"type": "string", "enum": ["engineer", "doctor", "teacher"]},
        },
        "required": ["name", "age", "role"],
        "additionalProperties": False,
    },
    "order": {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "minimum": 1, "maximum": 99999},
            "items": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "product": {"type": "string", "maxLength": 30},
                        "quantity": {"type": "integer", "minimum": 1, "maximum": 99},
                    },
                    "required": ["product", "quantity"],
                    "additionalProperties": False,
                },
                "minItems": 1,
                "maxItems": 3,
            },
            "paid": {"type": "boolean"},
        },
        "required": ["id", "items", "paid"],
        "additionalProperties": False,
    },
    "city": {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 30},
            "country": {"type": "object",
                        "properties": {"name": {"type": "string", "maxLength": 30},
                                       "continent": {"enum": ["Europe", "Asia", "Africa",
                                                              "America", "Oceania"]}},
                        "required": ["name", "continent"], "additionalProperties": False},
            "tags": {"type": "array", "items": {"type": "string", "maxLength": 15},
                     "maxItems": 3},
        },
        "required": ["city", "country", "tags"],
        "additionalProperties": False,
    },
}
PROMPTS = {
    "person": "Describe a fictional person as JSON.",
    "order": "Write a shop order as JSON.",
    "city": "Describe Paris as JSON.",
}


def constrained(name, stream=False, seed=0):
    kw = dict(
        model=model,
        messages=[{"role": "user", "content": PROMPTS[name]}],
        max_tokens=200,
        temperature=0.7,
        seed=seed,
        response_format={"type": "json_schema",
                         "json_schema": {"name": name, "schema": SCHEMAS[name], "strict": True}},
    )
    if not stream:
        r = client.chat.completions.create(**kw)
        assert r.choices[0].finish_reason == "stop", r
        return name, r.choices[0].message.content
    text = ""
    for chunk in client.chat.completions.create(stream=True, **kw):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
    return name, text


def free(i):
    r = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": f"Tell me a fact about the number {i}."}],
        max_tokens=40, temperature=0.7, seed=i,
    )
    return r.choices[0].message.content


with cf.ThreadPoolExecutor(40) as pool:
    jobs = [pool.submit(constrained, name, stream=i % 2 == 1, seed=i)
            for i, name in enumerate(list(SCHEMAS) * 7)][:20]
    others = [pool.submit(free, i) for i in range(20)]
    outputs = [j.result() for j in jobs]
    assert all(o.result() for o in others)
for name, text in outputs:
    value = json.loads(text)
    jsonschema.validate(value, SCHEMAS[name])

obj = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Give a JSON object with a cat's name and color."}],
    max_tokens=300, temperature=0, response_format={"type": "json_object"},
)
assert obj.choices[0].finish_reason == "stop", obj
value = json.loads(obj.choices[0].message.content)
assert isinstance(value, dict), value

choice = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "Is the sky blue? Answer yes or no."}],
    max_tokens=10, temperature=1.0, seed=5, n=4, extra_body={"guided_choice": ["yes", "no", "maybe"]},
)
for c in choice.choices:
    assert c.message.content in ("yes", "no", "maybe"), c

date = client.completions.create(
    model=model, prompt="The date of the moon landing was", max_tokens=20, temperature=0,
    extra_body={"guided_regex": r" [0-9]{4}-[0-9]{2}-[0-9]{2}"},
)
assert re.fullmatch(r" [0-9]{4}-[0-9]{2}-[0-9]{2}", date.choices[0].text), date

try:
    client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "x"}],
        response_format={"type": "json_schema", "json_schema": {"name": "bad",
                                                                "schema": {"type": "nope"}}},
    )
    raise AssertionError("an invalid schema was accepted")
except openai.BadRequestError as e:
    assert e.body["param"] == "response_format", e.body

print("ok")
