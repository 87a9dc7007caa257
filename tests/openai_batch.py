"""The Batch API through the official openai client: four batches (chat, completions, embeddings,
responses; 500 lines, 5% of them bad, while 8 interactive streams run: not JSON, no custom_id, another url, a repeated custom_id,
a body the endpoint refuses) uploaded with files.create, run with batches.create, polled, and
their output and error files downloaded: every good line answered once with 200, every bad line
an error record, request_counts exact.

    openai_batch.py BASE_URL CHAT_MODEL EMBED_MODEL
"""
import concurrent.futures
import json
import sys
import time

import openai

PLAN = [("/v1/chat/completions", 200), ("/v1/completions", 150), ("/v1/embeddings", 100),
        ("/v1/responses", 50)]


def body(url, i, chat, embed):
    if url == "/v1/chat/completions":
        return {"model": chat, "messages": [{"role": "user", "content": f"Say the number {i}."}],
                "max_tokens": 6, "temperature": 0}
    if url == "/v1/completions":
        return {"model": chat, "prompt": f"Count: {i},", "max_tokens": 4, "temperature": 0}
    if url == "/v1/embeddings":
        return {"model": embed, "input": f"sentence number {i}"}
    return {"model": chat, "input": f"Name the number {i}.", "max_output_tokens": 6, "temperature": 0}


def lines_for(url, n, chat, embed):
    """(lines, good custom ids, bad custom ids): every 20th line is bad, five kinds in turn."""
    lines, good, bad = [], [], []
    for i in range(n):
        cid = f"{url.split('/')[-1]}-{i}"
        line = {"custom_id": cid, "method": "POST", "url": url, "body": body(url, i, chat, embed)}
        if i % 20 == 19:
            kind = (i // 20) % 5
            if kind == 0:
                lines.append("{not json")
                continue  # no custom_id to report
            if kind == 1:
                del line["custom_id"]
                lines.append(json.dumps(line))
                continue
            if kind == 2:
                line["url"] = "/v1/elsewhere"
            elif kind == 3:
                line["custom_id"] = f"{url.split('/')[-1]}-0"  # a repeat
                lines.append(json.dumps(line))
                continue
            else:
                line["body"]["model"] = 12345  # the endpoint's own 400
            bad.append(cid)
        else:
            good.append(cid)
        lines.append(json.dumps(line))
    return "\n".join(lines) + "\n", good, bad


def main():
    base_url, chat, embed = sys.argv[1:4]
    client = openai.OpenAI(base_url=base_url, api_key="unused")
    batches = []
    for url, n in PLAN:
        text, good, bad = lines_for(url, n, chat, embed)
        f = client.files.create(file=("in.jsonl", text.encode()), purpose="batch")
        assert f.purpose == "batch" and f.bytes == len(text.encode())
        assert client.files.content(f.id).read() == text.encode()
        b = client.batches.create(input_file_id=f.id, endpoint=url, completion_window="24h",
                                  metadata={"kind": url})
        batches.append((b.id, url, n, good, bad))
    # 8 interactive streams while the batches run: each streams to its end
    def interactive(i):
        stream = client.chat.completions.create(
            model=chat, stream=True, max_tokens=16, temperature=0,
            messages=[{"role": "user", "content": f"Say hello {i}."}])
        return [c.choices[0].finish_reason for c in stream if c.choices][-1]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        finished = list(pool.map(interactive, range(8)))
    assert all(f in ("stop", "length") for f in finished), finished
    running = [client.batches.retrieve(bid).status for bid, *_ in batches]
    print("batches while the interactive streams ended:", running)
    deadline = time.time() + 600
    for bid, url, n, good, bad in batches:
        while True:
            b = client.batches.retrieve(bid)
            if b.status in ("completed", "failed", "cancelled"):
                break
            assert time.time() < deadline, b
            time.sleep(0.5)
        assert b.status == "completed", b
        assert b.request_counts.total == n, (url, b.request_counts)
        assert b.request_counts.completed == len(good), (url, b.request_counts, len(good))
        assert b.request_counts.failed == n - len(good), (url, b.request_counts)
        out = [json.loads(l) for l in client.files.content(b.output_file_id).text.splitlines()]
        errs = [json.loads(l) for l in client.files.content(b.error_file_id).text.splitlines()]
        ids = [r["custom_id"] for r in out]
        assert sorted(ids) == sorted(good) and len(set(ids)) == len(ids), url
        assert all(r["response"]["status_code"] == 200 and r["error"] is None for r in out)
        assert len(errs) == n - len(good), (url, len(errs))
        for cid in bad:  # the endpoint's 400s carry its error body; the others an error record
            rec = next(r for r in errs if r["custom_id"] == cid)
            assert rec["error"] is not None or rec["response"]["status_code"] == 400, rec
        first = next(r for r in out if r["custom_id"].endswith("-0"))["response"]["body"]
        if url == "/v1/embeddings":
            assert len(first["data"][0]["embedding"]) == 384
        elif url == "/v1/responses":
            assert first["object"] == "response"
        else:
            assert first["choices"][0]["finish_reason"] in ("stop", "length")
        print(url, b.request_counts)
    listed = client.batches.list(limit=2)
    assert len(listed.data) == 2 and listed.has_more
    assert client.files.delete(client.batches.retrieve(batches[0][0]).input_file_id).deleted
    print("ok")


if __name__ == "__main__":
    main()
