"""A decoder as an embedding model: a tiny random Qwen3 in the sentence-transformers layout
(last-token pooling, Normalize), as Qwen3-Embedding ships, saved as the bare base model (no
`model.` prefix), against sentence-transformers itself.

    embeddings_decoder.py write DIR TOKENIZER_DIR [mean]   # the folder (transformers writes it)
    embeddings_decoder.py check BASE_URL MODEL DIR [mean]  # weir's vectors (openai client)

With `mean`, the folder pools by the mean of the tokens and its config.json declares
`matryoshka_dimensions`: a request for 32 dimensions gets the first 32 values, renormalized.
"""
import json
import shutil
import sys
from pathlib import Path

SENTENCES = [
    "The cat sits on the mat.",
    "Paris is the capital of France.",
    "How do I reset my password?",
    "Quantum entanglement links the states of two particles.",
    "SELECT name FROM users WHERE age > 30;",
    "a",
    "Bitte schließen Sie die Tür.",
    "A long sentence " + "that keeps going " * 20 + "until it ends.",
]


def write(out: Path, tokenizer_dir: Path, mean: bool) -> None:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3Config(
        vocab_size=30522, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
        tie_word_embeddings=True, torch_dtype="float32",
    )
    model = Qwen3ForCausalLM(cfg)
    with torch.no_grad():  # norms away from 1 so that the final norm matters
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    # the base model alone, without the `model.` prefix (Qwen3Model, as embedding checkpoints
    # such as e5-mistral are saved)
    model.model.save_pretrained(out)
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(tokenizer_dir / f, out / f)
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (out / "modules.json").write_text(json.dumps(modules))
    (out / "1_Pooling").mkdir(exist_ok=True)
    modes = ["cls_token", "mean_tokens", "max_tokens", "mean_sqrt_len_tokens", "weightedmean_tokens"]
    pooling = {f"pooling_mode_{m}": False for m in modes}
    pooling.update({"word_embedding_dimension": 64, "pooling_mode_lasttoken": not mean,
                    "include_prompt": True})
    pooling["pooling_mode_mean_tokens"] = mean
    if mean:
        config = json.loads((out / "config.json").read_text())
        config["matryoshka_dimensions"] = [64, 32]
        (out / "config.json").write_text(json.dumps(config))
    (out / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 256}))


def check(base_url: str, model: str, folder: Path, mean: bool) -> None:
    import numpy as np
    import openai
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(folder), device="cpu").encode(SENTENCES)
    client = openai.OpenAI(base_url=base_url, api_key="unused")
    got = client.embeddings.create(model=model, input=SENTENCES, encoding_format="float")
    vectors = np.array([d.embedding for d in got.data], dtype=np.float32)
    cos = [float(np.dot(a, b) / np.linalg.norm(a) / np.linalg.norm(b)) for a, b in zip(vectors, reference)]
    print(f"decoder embeddings vs sentence-transformers: worst cosine {min(cos):.7f}")
    assert min(cos) >= 0.99999, cos
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    for i in (0, 7):
        alone = client.embeddings.create(model=model, input=SENTENCES[i], encoding_format="float")
        assert np.array_equal(np.array(alone.data[0].embedding, dtype=np.float32), vectors[i]), i
    if mean:  # Matryoshka: the leading 32 values, renormalized
        short = client.embeddings.create(model=model, input=SENTENCES, dimensions=32, encoding_format="float")
        for d, r in zip(short.data, reference):
            want = r[:32] / np.linalg.norm(r[:32])
            assert len(d.embedding) == 32 and np.abs(np.array(d.embedding) - want).max() < 1e-4
    try:
        client.completions.create(model=model, prompt="hi", max_tokens=2)
        raise AssertionError("an embedding model completed text")
    except openai.BadRequestError as e:
        assert e.body.get("param") == "model", e.body
    print("ok")


if __name__ == "__main__":
    if sys.argv[1] == "write":
        write(Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:] == ["mean"])
    else:
        check(sys.argv[2], sys.argv[3], Path(sys.argv[4]), sys.argv[5:] == ["mean"])
