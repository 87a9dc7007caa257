"""/v1/responses through the official openai client on SmolLM2: plain and streamed (the typed
event sequence), a forced function call and its output sent back through previous_response_id,
text.format json_schema, instructions, retrieve and delete, store=false, background responses
(polled, cancelled), and the 400s/404s.

    openai_responses.py BASE_URL MODEL
"""
import json
import sys
import time

import httpx
import jsonschema
import openai
from responses_schema import validate_event, validate_response

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False},
}


def expect(kind, fn, param=None):
    try:
        fn()
    except kind as e:
        if param is not None:
            assert e.body.get("param") == param, (param, e.body)
        return
    raise AssertionError(f"no {kind.__name__}")


def raw_wire(base_url, body):
    """The response as sent, and the events of the same request streamed, both checked against
    the transcription of OpenAI's schemas (tests/responses_schema.py)."""
    r = httpx.post(f"{base_url}/responses", json=body, timeout=120)
    assert r.status_code == 200, r.text
    validate_response(r.json())
    events = []
    with httpx.stream("POST", f"{base_url}/responses", json={**body, "stream": True}, timeout=120) as s:
        for line in s.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                events.append(json.loads(line[6:]))
    for e in events:
        validate_event(e)
    return r.json(), events


def main():
    base_url, model = sys.argv[1:3]
    client = openai.OpenAI(base_url=base_url, api_key="unused")
    ask = dict(model=model, input="What is the capital of France? Answer in one word.",
               temperature=0, max_output_tokens=12)

    r = client.responses.create(**ask, instructions="You are terse.")
    assert r.id.startswith("resp_") and r.object == "response", r
    assert r.status in ("completed", "incomplete") and r.output_text, r
    assert r.instructions == "You are terse."
    assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.output[0].type == "message" and r.output[0].content[0].type == "output_text"
    print("plain:", repr(r.output_text), r.status)

    # the same greedy answer streamed, as OpenAI's event sequence
    events = list(client.responses.create(**ask, instructions="You are terse.", stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[1] == "response.in_progress", kinds[:3]
    assert kinds[-1] in ("response.completed", "response.incomplete"), kinds[-3:]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    for k in ["response.output_item.added", "response.content_part.added", "response.output_text.delta",
              "response.output_text.done", "response.content_part.done", "response.output_item.done"]:
        assert k in kinds, (k, kinds)
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == r.output_text == events[-1].response.output_text, (deltas, r.output_text)

    # the wire itself, against OpenAI's published schemas: text, a forced call, structured output
    for body in [
        dict(ask),
        dict(model=model, input="Weather in Oslo?", tools=[WEATHER], tool_choice="required",
             temperature=0, max_output_tokens=40),
        dict(model=model, input="Is Paris sunny? JSON.", max_output_tokens=30, temperature=0,
             text={"format": {"type": "json_schema", "name": "w", "strict": True,
                              "schema": {"type": "object", "properties": {"sunny": {"type": "boolean"}},
                                         "required": ["sunny"], "additionalProperties": False}}}),
    ]:
        whole, events = raw_wire(base_url, body)
        # streamed and whole: the same items (greedy), up to their fresh ids and the spacing of
        # call arguments (streamed as written, whole as parsed)
        def same(items):
            return [{k: json.loads(v) if k == "arguments" else v for k, v in i.items()
                     if k not in ("id", "call_id")} for i in items]
        assert same(events[-1]["response"]["output"]) == same(whole["output"]), (events[-1], whole)

    # retrieve, then delete
    got = client.responses.retrieve(r.id)
    assert got.id == r.id and got.output_text == r.output_text
    assert client.responses.delete(r.id) is None or True
    expect(openai.NotFoundError, lambda: client.responses.retrieve(r.id))

    # a forced call, its output sent back: the conversation continues from the stored response
    call = client.responses.create(model=model, input="What is the weather in Oslo?", tools=[WEATHER],
                                   tool_choice="required", temperature=0, max_output_tokens=40)
    fc = [o for o in call.output if o.type == "function_call"]
    assert fc and fc[0].name == "get_weather", call.output
    jsonschema.validate(json.loads(fc[0].arguments), WEATHER["parameters"])
    follow = client.responses.create(
        model=model, previous_response_id=call.id, tools=[WEATHER], temperature=0,
        max_output_tokens=16,
        input=[{"type": "function_call_output", "call_id": fc[0].call_id, "output": '{"celsius": -3}'}],
    )
    assert follow.previous_response_id == call.id and follow.output_text, follow
    # the stored conversation (the call) came first: most of it from the prefix cache
    assert follow.usage.input_tokens > call.usage.input_tokens, (follow.usage, call.usage)
    assert follow.usage.input_tokens_details.cached_tokens >= call.usage.input_tokens // 2, follow.usage
    print("tool round trip:", fc[0].arguments, "->", repr(follow.output_text))

    # the forced call streamed
    events = list(client.responses.create(model=model, input="Weather in Paris?", tools=[WEATHER],
                                          tool_choice="required", temperature=0, max_output_tokens=40,
                                          stream=True))
    kinds = [e.type for e in events]
    assert "response.function_call_arguments.delta" in kinds and "response.function_call_arguments.done" in kinds
    args = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    jsonschema.validate(json.loads(args), WEATHER["parameters"])

    # structured output
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
              "sunny": {"type": "boolean"}}, "required": ["city", "sunny"], "additionalProperties": False}
    s = client.responses.create(model=model, input="Describe Paris weather as JSON.", max_output_tokens=60,
                                temperature=0,
                                text={"format": {"type": "json_schema", "name": "w", "schema": schema}})
    jsonschema.validate(json.loads(s.output_text), schema)
    assert s.text.format.type == "json_schema"

    # not stored: nothing to retrieve
    n = client.responses.create(**ask, store=False)
    expect(openai.NotFoundError, lambda: client.responses.retrieve(n.id))

    # background: answered at once in progress, polled to the same greedy text; cancel
    b = client.responses.create(**ask, instructions="You are terse.", background=True)
    assert b.status in ("queued", "in_progress"), b.status
    for _ in range(600):
        b = client.responses.retrieve(b.id)
        if b.status not in ("queued", "in_progress"):
            break
        time.sleep(0.05)
    assert b.output_text == r.output_text and b.status == r.status, (b.output_text, b.status)
    long = client.responses.create(model=model, input="Write a long story about a dragon.",
                                   max_output_tokens=2000, background=True)
    try:
        cancelled = client.responses.cancel(long.id)
        assert cancelled.status == "cancelled", cancelled.status
        assert client.responses.retrieve(long.id).status == "cancelled"
    except openai.BadRequestError:  # it finished first
        assert client.responses.retrieve(long.id).status in ("completed", "incomplete")
    expect(openai.BadRequestError, lambda: client.responses.cancel(b.id), "response_id")
    expect(openai.BadRequestError, lambda: client.responses.create(**ask, background=True, store=False),
           "background")
    expect(openai.BadRequestError, lambda: client.responses.create(
        **ask, tools=[{"type": "web_search"}]), "tools[0].type")
    expect(openai.NotFoundError, lambda: client.responses.create(
        **ask, previous_response_id="resp_0123"), "previous_response_id")
    print("ok")


if __name__ == "__main__":
    main()
