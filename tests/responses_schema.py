"""JSON Schemas for OpenAI Responses API objects, transcribed from OpenAI's published API
specification: openai/openai-openapi, openapi.yaml (openapi.json matches it), at commit
f85dbe223d40e1a31cba812ab2d755c7e98a92a3.

These are weir's own JSON-Schema transcription of what the specification requires, in the style
of tests/openai_wire.py: the required keys (present even when null), their types and
nullability, and the `type` enum constants. Extra keys are allowed (additionalProperties is
true), and optional keys are only typed when present. What each constant transcribes:

  RESPONSE        Response = allOf(ModelResponseProperties, ResponseProperties, {...}); its
                  `required` list is the one in the third allOf member.
  USAGE           ResponseUsage (Response.usage is optional; null is accepted).
  OUTPUT_ITEM     OutputItem, restricted to three of its variants: OutputMessage (content:
                  OutputMessageContent = OutputTextContent | RefusalContent), FunctionToolCall
                  and ReasoningItem (summary: SummaryTextContent, content:
                  ReasoningTextContent). The other OutputItem variants (web search, MCP, ...)
                  are not transcribed and so are rejected.
  EVENTS          ResponseStreamEvent, by `type`: ResponseCreatedEvent, ResponseInProgressEvent,
                  ResponseQueuedEvent, ResponseCompletedEvent, ResponseIncompleteEvent,
                  ResponseFailedEvent, ResponseErrorEvent, ResponseOutputItemAddedEvent,
                  ResponseOutputItemDoneEvent, ResponseContentPartAddedEvent,
                  ResponseContentPartDoneEvent (part: OutputContent), ResponseTextDeltaEvent,
                  ResponseTextDoneEvent (logprobs: ResponseLogProb), ResponseRefusalDeltaEvent,
                  ResponseRefusalDoneEvent, ResponseFunctionCallArgumentsDeltaEvent,
                  ResponseFunctionCallArgumentsDoneEvent, ResponseReasoningTextDeltaEvent,
                  ResponseReasoningTextDoneEvent, ResponseReasoningSummaryPartAddedEvent,
                  ResponseReasoningSummaryPartDoneEvent, ResponseReasoningSummaryTextDeltaEvent,
                  ResponseReasoningSummaryTextDoneEvent.

No DELETED: the spec gives `DELETE /responses/{response_id}` (deleteResponse) a 200 with no
content schema; only its x-oaiMeta example shows a body,
{"id": "resp_...", "object": "response", "deleted": true}.

Every schema here is a valid Draft 7 (and Draft 2020-12) schema.
"""
import jsonschema

S, I, N, B = {"type": "string"}, {"type": "integer"}, {"type": "number"}, {"type": "boolean"}
NULL_S, NULL_I = {"type": ["string", "null"]}, {"type": ["integer", "null"]}


def obj(required, props, extra=True):
    return {"type": "object", "required": required, "properties": props,
            "additionalProperties": extra}


def nullable(schema):
    return {"anyOf": [schema, {"type": "null"}]}


def const(value):
    return {"enum": [value]}


def union(*variants):
    """An OpenAPI oneOf with `discriminator: type`, written as if/then so that a failure names
    the offending key of the matching variant instead of every variant's mismatch."""
    types = [v["properties"]["type"]["enum"][0] for v in variants]
    return {"type": "object", "required": ["type"], "properties": {"type": {"enum": types}},
            "allOf": [{"if": {"required": ["type"], "properties": {"type": const(t)}}, "then": v}
                      for t, v in zip(types, variants)]}


ITEM_STATUS = {"enum": ["in_progress", "completed", "incomplete"]}
ERROR_CODE = {"enum": [  # ResponseErrorCode
    "server_error", "rate_limit_exceeded", "invalid_prompt", "data_residency_mismatch",
    "bio_policy", "vector_store_timeout", "invalid_image", "invalid_image_format",
    "invalid_base64_image", "invalid_image_url", "image_too_large", "image_too_small",
    "image_parse_error", "image_content_policy_violation", "invalid_image_mode",
    "image_file_too_large", "unsupported_image_media_type", "empty_image_file",
    "failed_to_download_image", "image_file_not_found"]}

# ResponseUsage
USAGE = obj(["input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details",
             "total_tokens"], {
    "input_tokens": I,
    "input_tokens_details": obj(["cached_tokens", "cache_write_tokens"],
                                {"cached_tokens": I, "cache_write_tokens": I}),
    "output_tokens": I,
    "output_tokens_details": obj(["reasoning_tokens"], {"reasoning_tokens": I}),
    "total_tokens": I})

# LogProb / TopLogProb (OutputTextContent.logprobs)
TOP_LOGPROB = obj(["token", "logprob", "bytes"],
                  {"token": S, "logprob": N, "bytes": {"type": "array", "items": I}})
LOGPROB = obj(["token", "logprob", "bytes", "top_logprobs"],
              {"token": S, "logprob": N, "bytes": {"type": "array", "items": I},
               "top_logprobs": {"type": "array", "items": TOP_LOGPROB}})
# ResponseLogProb (response.output_text.delta / .done logprobs)
RESPONSE_LOGPROB = obj(["token", "logprob"], {
    "token": S, "logprob": N,
    "top_logprobs": {"type": "array", "items": obj([], {"token": S, "logprob": N})}})

# Annotation = FileCitationBody | UrlCitationBody | ContainerFileCitationBody | FilePath
ANNOTATION = union(
    obj(["type", "file_id", "index", "filename"],
        {"type": const("file_citation"), "file_id": S, "index": I, "filename": S}),
    obj(["type", "url", "start_index", "end_index", "title"],
        {"type": const("url_citation"), "url": S, "start_index": I, "end_index": I,
         "title": S}),
    obj(["type", "container_id", "file_id", "start_index", "end_index", "filename"],
        {"type": const("container_file_citation"), "container_id": S, "file_id": S,
         "start_index": I, "end_index": I, "filename": S}),
    obj(["type", "file_id", "index"], {"type": const("file_path"), "file_id": S, "index": I}),
)

# OutputTextContent, RefusalContent, ReasoningTextContent, SummaryTextContent
OUTPUT_TEXT = obj(["type", "text", "annotations", "logprobs"], {
    "type": const("output_text"), "text": S,
    "annotations": {"type": "array", "items": ANNOTATION},
    "logprobs": {"type": "array", "items": LOGPROB}})
REFUSAL = obj(["type", "refusal"], {"type": const("refusal"), "refusal": S})
REASONING_TEXT = obj(["type", "text"], {"type": const("reasoning_text"), "text": S})
SUMMARY_TEXT = obj(["type", "text"], {"type": const("summary_text"), "text": S})
OUTPUT_CONTENT = union(OUTPUT_TEXT, REFUSAL, REASONING_TEXT)  # OutputContent

# OutputMessage
MESSAGE = obj(["id", "type", "role", "content", "status"], {
    "id": S, "type": const("message"), "role": const("assistant"),
    "content": {"type": "array", "items": union(OUTPUT_TEXT, REFUSAL)},
    "phase": nullable({"enum": ["commentary", "final_answer"]}),
    "status": ITEM_STATUS})
# FunctionToolCall (note: `id` and `status` are optional in the spec)
FUNCTION_CALL = obj(["type", "call_id", "name", "arguments"], {
    "id": S, "type": const("function_call"), "call_id": S, "namespace": S, "name": S,
    "arguments": S, "status": ITEM_STATUS,
    "caller": nullable(union(
        obj(["type"], {"type": const("direct")}),
        obj(["type", "caller_id"], {"type": const("program"), "caller_id": S})))})
# ReasoningItem
REASONING = obj(["id", "summary", "type"], {
    "type": const("reasoning"), "id": S, "encrypted_content": NULL_S,
    "summary": {"type": "array", "items": SUMMARY_TEXT},
    "content": {"type": "array", "items": REASONING_TEXT},
    "status": ITEM_STATUS})
OUTPUT_ITEM = union(MESSAGE, FUNCTION_CALL, REASONING)

# Tool: FunctionTool in full; the other Tool variants are only checked for a string `type`.
FUNCTION_TOOL = obj(["type", "name", "strict", "parameters"], {
    "type": const("function"), "name": S, "description": NULL_S,
    "strict": {"type": ["boolean", "null"]}, "parameters": {"type": ["object", "null"]}})
TOOL = {"oneOf": [FUNCTION_TOOL,
                  obj(["type"], {"type": {"type": "string", "not": const("function")}})]}
# ToolChoiceParam: ToolChoiceOptions | ToolChoiceFunction | the other object variants.
TOOL_CHOICE = {"oneOf": [
    {"enum": ["none", "auto", "required"]},
    obj(["type", "name"], {"type": const("function"), "name": S}),
    obj(["type"], {"type": {"type": "string", "not": const("function")}})]}

# Response
RESPONSE = obj(["id", "object", "created_at", "error", "incomplete_details", "instructions",
                "model", "tools", "output", "parallel_tool_calls", "metadata", "tool_choice",
                "temperature", "top_p"], {
    "id": S,
    "object": const("response"),
    "status": {"enum": ["completed", "failed", "in_progress", "cancelled", "queued",
                        "incomplete"]},
    "created_at": N,
    "completed_at": {"type": ["number", "null"]},
    "error": nullable(obj(["code", "message"], {"code": ERROR_CODE, "message": S})),
    "incomplete_details": nullable(obj([], {
        "reason": {"enum": ["max_output_tokens", "content_filter"]}})),
    "instructions": {"anyOf": [S, {"type": "array", "items": {"type": "object"}},
                               {"type": "null"}]},
    "model": S,
    "tools": {"type": "array", "items": TOOL},
    "output": {"type": "array", "items": OUTPUT_ITEM},
    "output_text": NULL_S,
    "parallel_tool_calls": B,
    "metadata": {"type": ["object", "null"], "additionalProperties": S},
    "tool_choice": TOOL_CHOICE,
    "temperature": {"type": ["number", "null"], "minimum": 0, "maximum": 2},
    "top_p": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
    "top_logprobs": {"type": ["integer", "null"], "minimum": 0, "maximum": 20},
    "usage": nullable(USAGE),
    "reasoning": nullable(obj([], {
        "effort": nullable({"enum": ["none", "minimal", "low", "medium", "high", "xhigh",
                                     "max"]}),
        "summary": nullable({"enum": ["auto", "concise", "detailed"]})})),
    "text": obj([], {"format": {"type": "object"}}),
    "previous_response_id": NULL_S,
    "background": {"type": ["boolean", "null"]},
    "max_output_tokens": NULL_I,
    "max_tool_calls": NULL_I,
    "service_tier": nullable({"enum": ["auto", "default", "flex", "scale", "priority", "fast",
                                       "ultrafast"]}),
    "truncation": nullable({"enum": ["auto", "disabled"]}),
    "conversation": nullable(obj(["id"], {"id": S})),
    # `user` is typed plain string in the spec, but its own Response examples carry null.
    "user": NULL_S, "safety_identifier": NULL_S, "prompt_cache_key": NULL_S,
})


def event(type_, required, props):
    """A ResponseStreamEvent variant: always `type` and `sequence_number`, plus `required`."""
    return obj(["type", "sequence_number", *required],
               {"type": const(type_), "sequence_number": I, **props})


def response_event(type_):
    return event(type_, ["response"], {"response": RESPONSE})


def item_event(type_):
    return event(type_, ["output_index", "item"], {"output_index": I, "item": OUTPUT_ITEM})


def part_event(type_):
    return event(type_, ["item_id", "output_index", "content_index", "part"],
                 {"item_id": S, "output_index": I, "content_index": I, "part": OUTPUT_CONTENT})


def content_event(type_, key, extra=None):
    """Delta / done events addressed by item_id, output_index, content_index."""
    props = {"item_id": S, "output_index": I, "content_index": I, key: S}
    return event(type_, ["item_id", "output_index", "content_index", key, *(extra or {})],
                 {**props, **(extra or {})})


def summary_event(type_, key, schema):
    return event(type_, ["item_id", "output_index", "summary_index", key],
                 {"item_id": S, "output_index": I, "summary_index": I, key: schema})


LOGPROBS = {"logprobs": {"type": "array", "items": RESPONSE_LOGPROB}}
EVENTS = {e["properties"]["type"]["enum"][0]: e for e in [
    response_event("response.created"),
    response_event("response.in_progress"),
    response_event("response.queued"),
    response_event("response.completed"),
    response_event("response.incomplete"),
    response_event("response.failed"),
    event("error", ["code", "message", "param"], {"code": NULL_S, "message": S, "param": NULL_S}),
    item_event("response.output_item.added"),
    item_event("response.output_item.done"),
    part_event("response.content_part.added"),
    part_event("response.content_part.done"),
    content_event("response.output_text.delta", "delta", LOGPROBS),
    content_event("response.output_text.done", "text", LOGPROBS),
    content_event("response.refusal.delta", "delta"),
    content_event("response.refusal.done", "refusal"),
    event("response.function_call_arguments.delta", ["item_id", "output_index", "delta"],
          {"item_id": S, "output_index": I, "delta": S}),
    event("response.function_call_arguments.done",
          ["item_id", "name", "output_index", "arguments"],
          {"item_id": S, "name": S, "output_index": I, "arguments": S}),
    content_event("response.reasoning_text.delta", "delta"),
    content_event("response.reasoning_text.done", "text"),
    summary_event("response.reasoning_summary_part.added", "part", SUMMARY_TEXT),
    summary_event("response.reasoning_summary_part.done", "part", SUMMARY_TEXT),
    summary_event("response.reasoning_summary_text.delta", "delta", S),
    summary_event("response.reasoning_summary_text.done", "text", S),
]}


def validate_response(obj):
    """Raises jsonschema.ValidationError unless `obj` is a spec-conformant Response."""
    jsonschema.validate(obj, RESPONSE, cls=jsonschema.Draft7Validator)


def validate_event(obj):
    """Raises jsonschema.ValidationError unless `obj` is a spec-conformant stream event;
    AssertionError if its `type` is not one of EVENTS."""
    kind = obj.get("type") if isinstance(obj, dict) else obj
    assert isinstance(kind, str) and kind in EVENTS, f"unknown Responses event type: {kind!r}"
    jsonschema.validate(obj, EVENTS[obj["type"]], cls=jsonschema.Draft7Validator)
