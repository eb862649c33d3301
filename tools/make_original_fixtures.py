#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer_original.json: ids from the original GPT-1 pipeline
(ftfy.fix_text, text_standardize, spaCy's English tokenizer, lowercase, BPE, unknown pieces to
id 0; re-implemented here from the paper's released code) for the hard strings of
make_tokenizer_fixtures.py and for the same book paragraphs (ids only, not the text).

  pip install ftfy spacy
  python3 tools/make_original_fixtures.py [GPT1_DATA]
"""
import glob
import json
import os
import re
import sys

import ftfy
import spacy

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
DATA = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "tokenizer_original.json")
BOOKS = ["austen_emma.txt", "bronte_wuthering.txt", "1-0.txt", "alcott_littlewomen.txt"]
PARAS_PER_BOOK = 300


def text_standardize(text):
    text = text.replace("—", "-").replace("–", "-").replace("―", "-").replace("…", "...").replace("´", "'")
    text = re.sub(r"""(-+|~+|!+|"+|;+|\?+|\++|,+|\)+|\(+|\\+|\/+|\*+|\[+|\]+|}+|{+|\|+|_+)""", r" \1 ", text)
    text = re.sub(r"\s*\n\s*", " \n ", text)
    text = re.sub(r"[^\S\n]+", " ", text)
    return text.strip()


class Original:
    def __init__(self, encoder_path, bpe_path):
        self.nlp = spacy.blank("en")
        self.encoder = json.load(open(encoder_path, encoding="utf-8"))
        merges = open(bpe_path, encoding="utf-8").read().split("\n")[1:-1]
        self.ranks = {tuple(m.split()): i for i, m in enumerate(merges)}
        self.cache = {}

    def bpe(self, token):
        word = tuple(token[:-1]) + (token[-1] + "</w>",)
        if token in self.cache:
            return self.cache[token]
        pairs = {(a, b) for a, b in zip(word, word[1:])}
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if bigram not in self.ranks:
                break
            first, second = bigram
            new, i = [], 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                    new.extend(word[i:j])
                    i = j
                except ValueError:
                    new.extend(word[i:])
                    break
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    new.append(first + second)
                    i += 2
                else:
                    new.append(word[i])
                    i += 1
            word = tuple(new)
            if len(word) == 1:
                break
            pairs = {(a, b) for a, b in zip(word, word[1:])}
        word = " ".join(word)
        if word == "\n  </w>":
            word = "\n</w>"
        self.cache[token] = word
        return word

    def encode(self, text):
        doc = self.nlp(text_standardize(ftfy.fix_text(text)))
        ids = []
        for tok in doc:
            ids.extend(self.encoder.get(t, 0) for t in self.bpe(tok.text.lower()).split(" "))
        return ids

    def tokens(self, text):
        return [t.text for t in self.nlp(text_standardize(ftfy.fix_text(text)))]


def fnv(ids):
    h = 0xCBF29CE484222325
    for i in ids:
        for b in int(i).to_bytes(4, "little"):
            h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


if __name__ == "__main__":
    from make_tokenizer_fixtures import HARD, paragraphs
    enc = Original(os.path.join(DATA, "gpt1-bpe", "encoder_bpe_40000.json"), os.path.join(DATA, "gpt1-bpe", "vocab_40000.bpe"))
    out = {"spacy": spacy.__version__, "ftfy": ftfy.__version__,
           "hard": [{"text": s, "ids": enc.encode(s)} for s in HARD if s.strip()], "books": []}
    for b in BOOKS:
        ps = paragraphs(os.path.join(DATA, "corpus", "books", b))[:PARAS_PER_BOOK]
        out["books"].append({"book": b, "paragraphs": len(ps), "ids": [enc.encode(p) for p in ps]})
    # Every 10th paragraph of every book: only a 64-bit FNV-1a hash of each paragraph's ids.
    out["sample_every"] = 10
    out["sample"] = []
    for path in sorted(glob.glob(os.path.join(DATA, "corpus", "books", "*.txt"))):
        ps = paragraphs(path)[::10]
        out["sample"].append({"book": os.path.basename(path), "hashes": ["%016x" % fnv(enc.encode(p)) for p in ps]})
    json.dump(out, open(OUT, "w"))
    print(OUT)
