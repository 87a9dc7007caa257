"""weir's KV cache events as a vLLM subscriber reads them (tests/kv_events.rs starts the server).

The structs below are vLLM's (vllm/distributed/kv_events.py, as of v0.26: the batch an array,
each event a map tagged by its class name), decoded with msgspec's strict typed decoder, so a
field weir names, orders or types differently from vLLM fails here.

    python3 tests/kv_events.py BASE_URL MODEL PUB_ENDPOINT REPLAY_ENDPOINT TOPIC BLOCK_SIZE
"""
import sys
import time
from typing import Any, Optional, Union

import msgspec
import openai
import zmq


class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):
    ts: float
    events: list[Any]
    data_parallel_rank: Optional[int] = None


class KVCacheEvent(msgspec.Struct, array_like=False, omit_defaults=True, gc=False, tag=True):
    """Base class for all KV cache-related events"""


class BlockStored(KVCacheEvent):
    block_hashes: list[Union[bytes, int]]
    parent_block_hash: Optional[Union[bytes, int]]
    token_ids: list[int]
    block_size: int
    lora_id: Optional[int]
    medium: Optional[str]
    lora_name: Optional[str]
    extra_keys: Optional[list[Any]] = None
    group_idx: Optional[int] = None


class BlockRemoved(KVCacheEvent):
    block_hashes: list[Union[bytes, int]]
    medium: Optional[str]
    group_idx: Optional[int] = None


class AllBlocksCleared(KVCacheEvent):
    pass


class KVEventBatch(EventBatch):
    events: list[Union[BlockStored, BlockRemoved, AllBlocksCleared]]


DECODER = msgspec.msgpack.Decoder(type=KVEventBatch)


class Subscriber:
    def __init__(self, ctx, endpoint, topic):
        self.sub = ctx.socket(zmq.SUB)
        self.sub.connect(endpoint)
        self.sub.setsockopt_string(zmq.SUBSCRIBE, topic)
        self.topic = topic.encode()
        self.batches = []  # (seq, payload bytes, decoded)

    def drain(self, quiet_s=1.0, wait_s=30.0):
        """Reads until no batch came for quiet_s (at most wait_s)."""
        deadline = time.time() + wait_s
        while time.time() < deadline:
            if not self.sub.poll(int(quiet_s * 1000)):
                return
            topic, seq, payload = self.sub.recv_multipart()
            assert topic == self.topic, topic
            self.batches.append((int.from_bytes(seq, "big"), payload, DECODER.decode(payload)))

    def events(self, since=0):
        return [e for _, _, b in self.batches[since:] for e in b.events]


def replay(ctx, endpoint, start, topic):
    """Every batch from `start` on, through a DEALER (as vllm-router asks): (seq, payload)s,
    read until the end marker (seq -1, empty topic and payload)."""
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(endpoint)
    dealer.send_multipart([b"", start.to_bytes(8, "big")])
    got = []
    while True:
        assert dealer.poll(10000), "no replay answer"
        empty, t, seq, payload = dealer.recv_multipart()
        assert empty == b""
        if int.from_bytes(seq, "big", signed=True) == -1:
            assert payload == b"" and t == b""
            break
        assert t == topic.encode()
        got.append((int.from_bytes(seq, "big"), payload))
    dealer.close()
    return got


def tokens(base_url, model, prompt):
    import json
    import urllib.request
    req = urllib.request.Request(f"{base_url}/tokenize", method="POST",
                                 data=json.dumps({"model": model, "prompt": prompt}).encode(),
                                 headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=30).read())["tokens"]


def check_chain(stored, block_size):
    """Every store names its parent: none for a prompt's first block, else a block stored
    before it; hashes and tokens line up."""
    known = set()
    for e in stored:
        assert e.block_size == block_size, e
        assert e.medium == "GPU" and e.lora_name is None and e.lora_id is None, e
        assert len(e.token_ids) == len(e.block_hashes) * block_size, e
        assert e.parent_block_hash is None or e.parent_block_hash in known, e
        for h in e.block_hashes:
            assert isinstance(h, int) and 0 <= h < 2**64, h
        known.update(e.block_hashes)
    return known


def main():
    base_url, model, pub, replay_ep, topic, bs = sys.argv[1:]
    bs = int(bs)
    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
    ctx = zmq.Context()
    sub = Subscriber(ctx, pub, topic)
    time.sleep(1.0)  # the SUB connects before the first batch is sent

    def history():
        """Every batch so far, from the replay socket (the SUB may have joined late), after
        checking that each batch the SUB got is the same bytes under the same number."""
        sub.drain()
        batches = replay(ctx, replay_ep, 0, topic)
        assert [s for s, _ in batches] == list(range(len(batches))), "seq from 0, no gap"
        by_seq = dict(batches)
        for seq, payload, _ in sub.batches:
            assert by_seq[seq] == payload, seq
        return [e for _, p in batches for e in DECODER.decode(p).events]

    # one prompt of 6 full blocks and a bit: its 6 blocks stored, in order, as one chain
    text = " ".join(f"word{i}" for i in range(60))
    prompt = tokens(base_url, model, text)
    assert len(prompt) > 6 * bs, len(prompt)
    prompt = prompt[: 6 * bs + 5]
    client.completions.create(model=model, prompt=prompt, max_tokens=2, temperature=0)
    events = history()
    stored = [e for e in events if isinstance(e, BlockStored)]
    known = check_chain(stored, bs)
    assert stored and stored[0].parent_block_hash is None, stored[:1]
    assert sum((e.token_ids for e in stored), []) == prompt[: 6 * bs], stored
    print(f"first prompt: {len(stored)} store events, {len(known)} blocks")

    # the same prompt again is a prefix hit: nothing new is stored for its blocks
    n = len(events)
    client.completions.create(model=model, prompt=prompt, max_tokens=2, temperature=0)
    again = [h for e in history()[n:] if isinstance(e, BlockStored) for h in e.block_hashes]
    assert not (set(again) & known), "a cached block stored twice"

    # other prompts until the pool must evict: removals name blocks stored before
    for i in range(40):
        other = [(i * 7919 + j * 31) % 20000 + 100 for j in range(6 * bs)]
        client.completions.create(model=model, prompt=other, max_tokens=1, temperature=0)
    events = history()
    # what a consumer holds, event by event: a store's parent is held, a removal was stored
    held, removed = set(), 0
    for e in events:
        if isinstance(e, BlockStored):
            assert e.parent_block_hash is None or e.parent_block_hash in held, e
            assert len(e.token_ids) == len(e.block_hashes) * bs and e.block_size == bs, e
            held.update(e.block_hashes)
        elif isinstance(e, BlockRemoved):
            assert set(e.block_hashes) <= held, "removed a block not held"
            held.difference_update(e.block_hashes)
            removed += len(e.block_hashes)
    assert removed, "no BlockRemoved although the pool was full"
    assert len(held) <= 48, "more blocks held than the pool has"
    print(f"after 40 more prompts: {len(held)} blocks held, {removed} removed")

    # a replay from a later number starts there
    later = replay(ctx, replay_ep, 3, topic)
    assert later and later[0][0] == 3, later[:1]
    print(f"replayed {len(later)} batches from seq 3")

    # unloading the model clears everything it held
    import urllib.request
    urllib.request.urlopen(urllib.request.Request(
        f"{base_url}/admin/models/{model}/unload", method="POST", data=b""), timeout=60).read()
    assert isinstance(history()[-1], AllBlocksCleared), "unload clears the cache"
    print("ok")


if __name__ == "__main__":
    main()
