"""Trains a small SentencePiece BPE model (byte fallback, as Llama 2 / Mistral) and writes its
pieces and reference encodings as JSON (run by tests/gguf_sentencepiece.rs).

usage: python3 tests/sentencepiece_fixture.py OUT.json
"""
import io
import json
import random
import sys

import sentencepiece as spm

random.seed(7)
words = ("the quick brown fox jumps over lazy dog river mountain city paris london "
         "weather sunny rainy tomorrow today model token server request batch kernel "
         "cache memory budget evict load stream answer question hello world").split()
lines = [" ".join(random.choice(words) for _ in range(random.randint(4, 14))) for _ in range(3000)]
lines += ["Hello, world! 123 4567.", "It's a test: (a+b)*c = 42;", "naïve café déjà vu"]
model = io.BytesIO()
spm.SentencePieceTrainer.train(
    sentence_iterator=iter(lines), model_writer=model, vocab_size=500, model_type="bpe",
    byte_fallback=True, character_coverage=0.995, bos_id=1, eos_id=2, unk_id=0, pad_id=-1,
    split_digits=True,
    minloglevel=2, normalization_rule_name="identity", remove_extra_whitespaces=False,  # as Llama 2
)
sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
pieces = []
for i in range(sp.get_piece_size()):
    kind = (2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i)
            else 5 if sp.is_unused(i) else 1)
    pieces.append({"piece": sp.id_to_piece(i), "score": sp.get_score(i), "type": kind})
texts = [
    "the quick brown fox",
    "Hello world, the weather in paris is sunny today.",
    "  two leading spaces and  double  spaces",
    "unseen words: zebra xylophone quizzical",
    "bytes: café 日本語 🙂",
    "digits 1234567890 and symbols #$%&",
    "line one\nline two",
    "trailing space ",
]
cases = [{"text": t, "ids": sp.encode(t)} for t in texts]
json.dump({"pieces": pieces, "cases": cases}, open(sys.argv[1], "w"))
