"""LoRA adapters through the official openai client (tests/lora.rs starts the server: model
"tiny" with adapter "sql").

    python3 tests/openai_lora.py BASE_URL WANT_TOKEN_IDS ADAPTER_PATH
"""
import sys

import openai


def main():
    base_url, want = sys.argv[1], [int(t) for t in sys.argv[2].split(",")]
    adapter_path = sys.argv[3]
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    cards = {m.id: m for m in client.models.list().data}
    assert set(cards) == {"tiny", "sql"}, cards
    assert cards["sql"].model_extra.get("parent") == "tiny", cards["sql"]
    assert cards["tiny"].model_extra.get("parent") is None, cards["tiny"]
    assert client.models.retrieve("sql").model_extra.get("parent") == "tiny"

    ask = dict(prompt="Hello", max_tokens=10, temperature=0, logprobs=0,
               extra_body={"return_tokens_as_token_ids": True})
    r = client.completions.create(model="sql", **ask)
    assert r.model == "sql", r.model
    got = [int(t.removeprefix("token_id:")) for t in r.choices[0].logprobs.tokens]
    assert got == want, (got, want)
    b = client.completions.create(model="tiny", **ask)
    assert b.model == "tiny"
    assert b.choices[0].text != r.choices[0].text or b.choices[0].logprobs.token_logprobs != \
        r.choices[0].logprobs.token_logprobs, "the adapter changed nothing"
    s = client.completions.create(model="sql", stream=True, **ask)
    assert "".join(c.choices[0].text for c in s if c.choices) == r.choices[0].text
    c = client.chat.completions.create(model="sql", max_tokens=5, temperature=0,
                                       messages=[{"role": "user", "content": "hi"}])
    assert c.model == "sql", c.model
    try:
        client.completions.create(model="nosuch", **ask)
        raise AssertionError("an unknown adapter was served")
    except openai.NotFoundError:
        pass
    # run time: the same folder loaded again under a new name answers the same; unloaded, 404
    import json
    import urllib.error
    import urllib.request

    def post(path, body):
        req = urllib.request.Request(f"{base_url}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    status, text = post("/v1/load_lora_adapter", {"lora_name": "sql2", "lora_path": adapter_path})
    assert status == 200 and "sql2" in text, (status, text)
    assert {m.id for m in client.models.list().data} == {"tiny", "sql", "sql2"}
    r2 = client.completions.create(model="sql2", **ask)
    assert r2.model == "sql2" and r2.choices[0].text == r.choices[0].text, (r2, r)
    status, text = post("/v1/load_lora_adapter", {"lora_name": "sql2", "lora_path": adapter_path})
    assert status == 400 and "already" in text, (status, text)
    status, text = post("/v1/load_lora_adapter", {"lora_name": "bad", "lora_path": "/no/such"})
    assert status == 400, (status, text)
    status, text = post("/v1/unload_lora_adapter", {"lora_name": "sql2"})
    assert status == 200, (status, text)
    try:
        client.completions.create(model="sql2", **ask)
        raise AssertionError("an unloaded adapter was served")
    except openai.NotFoundError:
        pass
    status, _ = post("/v1/unload_lora_adapter", {"lora_name": "sql2"})
    assert status == 404, status
    assert client.completions.create(model="sql", **ask).choices[0].text == r.choices[0].text
    # vLLM's lora_requests_info: one series for the model with adapters, none running now
    metrics = urllib.request.urlopen(f"{base_url}/metrics", timeout=30).read().decode()
    info = [l for l in metrics.splitlines() if l.startswith("weir:lora_requests_info{")]
    assert len(info) == 1, info
    assert 'model_name="tiny"' in info[0] and 'running_lora_adapters=""' in info[0], info
    assert 'max_lora="1"' in info[0], info  # no --max-loras: the adapters it has (sql2 is gone)
    print("ok")


if __name__ == "__main__":
    main()
