"""/v1/embeddings through the official openai client, against sentence-transformers' own vectors.

    openai_embeddings.py BASE_URL MODEL MODEL_DIR GENERATIVE_MODEL

MODEL is all-MiniLM-L6-v2 as weir serves it, MODEL_DIR the same folder for sentence-transformers
(CPU). Exits non-zero on the first failed check.
"""
import base64
import sys

import numpy as np
import openai
from sentence_transformers import SentenceTransformer

SENTENCES = [
    "The cat sits on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France.",
    "How do I reset my password?",
    "Quantum entanglement links the states of two particles.",
    "I love eating pizza on Friday nights!",
    "The stock market fell sharply after the announcement.",
    "Photosynthesis converts light into chemical energy.",
    "Where is the nearest train station?",
    "She plays the violin beautifully.",
    "Rust guarantees memory safety without a garbage collector.",
    "The meeting has been moved to 3 pm tomorrow.",
    "Mount Everest is the highest mountain above sea level.",
    "Please send me the invoice by email.",
    "Neural networks learn representations from data.",
    "It rained all day, so we stayed inside and read.",
    "The recipe calls for two cups of flour and one egg.",
    "Vaccines train the immune system to recognize pathogens.",
    "Our flight was delayed by four hours.",
    "The Pacific Ocean is the largest ocean on Earth.",
    "Can you recommend a good book about history?",
    "The defendant pleaded not guilty to all charges.",
    "Solar panels are becoming cheaper every year.",
    "He scored the winning goal in the final minute.",
    "Type 'help' for a list of commands.",
    "The museum opens at nine and closes at five.",
    "Bitte schließen Sie die Tür.",
    "¿Dónde está la biblioteca?",
    "东京是日本的首都。",
    "Emoji test: 🚀🔥 launch day!",
    "SELECT name FROM users WHERE age > 30;",
    "def add(a, b): return a + b",
    "https://example.com/path?query=1&x=y",
    "1234567890",
    "a",
    "The the the the the the the the.",
    "I'm not sure what you mean; could you clarify?",
    "Climate change affects weather patterns worldwide.",
    "The library has over a million volumes.",
    "Turn left at the second traffic light.",
    "Chocolate chip cookies are my favourite dessert.",
    "The algorithm runs in O(n log n) time.",
    "Elephants are the largest land animals.",
    "Your order has been shipped and will arrive Monday.",
    "Shakespeare wrote Hamlet around 1600.",
    "The patient was discharged after three days.",
    "We need to buy milk, eggs and bread.",
    "   leading and trailing spaces   ",
    "A long sentence " + "that keeps going and going " * 12 + "until it ends.",
    "UPPER CASE SHOUTING TEXT",
]


def cosine(a, b):
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def expect_400(param, fn):
    try:
        fn()
    except openai.BadRequestError as e:
        assert e.body.get("param") == param, (param, e.body)
        return
    raise AssertionError(f"no 400 for {param}")


def main():
    base_url, model, model_dir, generative = sys.argv[1:5]
    client = openai.OpenAI(base_url=base_url, api_key="unused")
    reference = SentenceTransformer(model_dir, device="cpu").encode(SENTENCES)

    # the client's default: base64 on the wire, decoded by the client
    got = client.embeddings.create(model=model, input=SENTENCES)
    assert [d.index for d in got.data] == list(range(len(SENTENCES)))
    vectors = np.array([d.embedding for d in got.data], dtype=np.float32)
    worst = min(cosine(v, r) for v, r in zip(vectors, reference))
    print(f"weir vs sentence-transformers: worst cosine over {len(SENTENCES)} sentences {worst:.7f}")
    assert worst >= 0.9999, worst
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5), "normalized"
    tokenizer = SentenceTransformer(model_dir, device="cpu").tokenizer
    tokens = sum(len(tokenizer(s)["input_ids"]) for s in SENTENCES)
    assert got.usage.prompt_tokens == tokens == got.usage.total_tokens, (got.usage, tokens)

    # float on the wire: the same numbers
    floats = client.embeddings.create(model=model, input=SENTENCES[:5], encoding_format="float")
    assert np.array_equal(np.array([d.embedding for d in floats.data], dtype=np.float32), vectors[:5])
    raw = client.with_raw_response.embeddings.create(
        model=model, input=SENTENCES[3], encoding_format="base64"
    ).http_response.json()
    decoded = np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), dtype="<f4")
    assert np.array_equal(decoded, vectors[3])

    # one sentence alone = the same sentence among 49 others, bit for bit
    for i in (0, 17, 49):
        alone = client.embeddings.create(model=model, input=SENTENCES[i], encoding_format="float")
        assert np.array_equal(np.array(alone.data[0].embedding, dtype=np.float32), vectors[i]), i

    # token ids in = text in
    ids = tokenizer(SENTENCES[2])["input_ids"]
    by_ids = client.embeddings.create(model=model, input=[ids], encoding_format="float")
    assert np.array_equal(np.array(by_ids.data[0].embedding, dtype=np.float32), vectors[2])

    expect_400("dimensions", lambda: client.embeddings.create(model=model, input="x", dimensions=100))
    expect_400("input", lambda: client.embeddings.create(model=model, input=""))
    expect_400("input", lambda: client.embeddings.create(model=model, input=[]))
    expect_400("input", lambda: client.embeddings.create(model=model, input=[[10**9]]))
    expect_400("input", lambda: client.embeddings.create(model=model, input="word " * 300))
    expect_400("model", lambda: client.embeddings.create(model=generative, input="x"))
    # a priority is honoured only under --scheduling-policy priority: a 400 here (FCFS)
    expect_400("priority", lambda: client.embeddings.create(model=model, input="x",
                                                            extra_body={"priority": 1}))
    expect_400(
        "model",
        lambda: client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "hi"}]
        ),
    )
    print("ok")


if __name__ == "__main__":
    main()
