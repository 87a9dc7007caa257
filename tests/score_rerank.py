"""/score and /rerank against sentence-transformers: a tiny random BERT cross-encoder
(BertForSequenceClassification, one label, written by transformers with all-MiniLM's tokenizer)
scored by CrossEncoder.predict, and all-MiniLM-L6-v2 (an embedding model) scored by the cosine
of its vectors.

    score_rerank.py write DIR TOKENIZER_DIR
    score_rerank.py check BASE_URL CROSS_MODEL CROSS_DIR EMBED_MODEL EMBED_DIR
"""
import json
import shutil
import sys
from pathlib import Path

QUERY = "How do plants make food?"
DOCS = [
    "Photosynthesis converts light into chemical energy in plants.",
    "The stock market fell sharply after the announcement.",
    "Plants use sunlight, water and carbon dioxide to make sugar.",
    "Our flight was delayed by four hours.",
    "Chlorophyll absorbs light in the leaves.",
    "a",
]


def write(out: Path, tokenizer_dir: Path) -> None:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=512, num_labels=1, initializer_range=0.2,
    )
    BertForSequenceClassification(cfg).save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(tokenizer_dir / f, out / f)


def post(base_url: str, path: str, body: dict) -> dict:
    import httpx

    r = httpx.post(base_url + path, json=body, timeout=60)
    assert r.status_code == 200, (path, r.status_code, r.text)
    return r.json()


def check(base_url: str, cross: str, cross_dir: Path, embed: str, embed_dir: Path) -> None:
    import httpx
    import numpy as np
    from sentence_transformers import CrossEncoder, SentenceTransformer

    want = CrossEncoder(str(cross_dir), device="cpu").predict([(QUERY, d) for d in DOCS])
    got = post(base_url, "/score", {"model": cross, "text_1": QUERY, "text_2": DOCS})
    scores = np.array([d["score"] for d in got["data"]])
    print(f"cross-encoder vs CrossEncoder.predict: max |diff| {np.abs(scores - want).max():.2e}")
    assert np.abs(scores - want).max() < 1e-5, (scores, want)
    assert got["usage"]["prompt_tokens"] > 0

    ranked = post(base_url, "/v1/rerank", {"model": cross, "query": QUERY, "documents": DOCS, "top_n": 3})
    order = [r["index"] for r in ranked["results"]]
    assert order == list(np.argsort(-want, kind="stable")[:3]), (order, want)
    assert ranked["results"][0]["document"]["text"] == DOCS[order[0]]
    assert abs(ranked["results"][0]["relevance_score"] - want[order[0]]) < 1e-5

    # one to one, and Cohere's document objects on /v2/rerank
    pairs = post(base_url, "/v1/score", {"model": cross, "text_1": DOCS[:2], "text_2": DOCS[2:4]})
    want_pairs = CrossEncoder(str(cross_dir), device="cpu").predict(list(zip(DOCS[:2], DOCS[2:4])))
    assert np.abs(np.array([d["score"] for d in pairs["data"]]) - want_pairs).max() < 1e-5
    v2 = post(base_url, "/v2/rerank", {"model": cross, "query": QUERY,
                                       "documents": [{"text": d} for d in DOCS], "return_documents": False})
    assert [r["index"] for r in v2["results"]] == list(np.argsort(-want, kind="stable"))
    assert "document" not in v2["results"][0]

    # an embedding model scores by cosine similarity
    st = SentenceTransformer(str(embed_dir), device="cpu")
    e = st.encode([QUERY] + DOCS)
    want_cos = [float(np.dot(e[0], d) / np.linalg.norm(e[0]) / np.linalg.norm(d)) for d in e[1:]]
    cos = post(base_url, "/score", {"model": embed, "text_1": QUERY, "text_2": DOCS})
    got_cos = [d["score"] for d in cos["data"]]
    print(f"embedding model cosine: max |diff| {np.abs(np.array(got_cos) - want_cos).max():.2e}")
    assert np.abs(np.array(got_cos) - want_cos).max() < 1e-4

    # what each model is not for, and mismatched lists
    for path, body, param in [
        ("/v1/embeddings", {"model": cross, "input": "x"}, "model"),
        ("/score", {"model": cross, "text_1": DOCS[:2], "text_2": DOCS[:3]}, "text_1"),
        ("/rerank", {"model": cross, "query": QUERY, "documents": []}, "documents"),
    ]:
        r = httpx.post(base_url + path, json=body, timeout=60)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (path, r.text)
    print("ok")


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        check(sys.argv[2], sys.argv[3], Path(sys.argv[4]), sys.argv[5], Path(sys.argv[6]))
