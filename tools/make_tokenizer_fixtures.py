#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer_hf.json: transformers' OpenAIGPTTokenizer ids for hard
strings (written here) and for the first paragraphs of some shared books (only their ids and
the book/paragraph indices are stored, not the text).

  pip install transformers tokenizers
  python3 tools/make_tokenizer_fixtures.py [GPT1_DATA]
"""
import json
import os
import shutil
import sys
import tempfile

from transformers import OpenAIGPTTokenizer

DATA = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("GPT1_DATA", os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "tokenizer_hf.json")
BOOKS = ["austen_emma.txt", "bronte_wuthering.txt", "1-0.txt", "alcott_littlewomen.txt"]
PARAS_PER_BOOK = 300

HARD = [
    "Hello, World!", "It's a test... don't “quoted” ‘single’ — dash – en-dash",
    "café naïve résumé Ångström façade", "1,000.50 $3.14 100% 3rd 2nd 1st 10:30pm",
    "https://example.com/path?q=1&r=2 e-mail: someone@example.org",
    "emoji 😀🎉 👍🏽 flags 🇫🇷", "中文字符 日本語 한국어", "Ã©tÃ© mojibake â€œquotesâ€\x9d",
    "&amp; &lt;tag&gt; &quot;html&quot; &#39;", "tabs\tand   runs   of    spaces\n\nnew lines",
    "a" * 300, "supercalifragilisticexpialidocious antidisestablishmentarianism", "",
    "   ", "\u00a0non-breaking\u00a0space", "zero\u200bwidth", "control\x07chars\x1b[0m",
    "MiXeD CaSe WoRdS", "I'm you're he'll we've they'd can't won't shan't y'all",
    "U.S.A. e.g. i.e. Mr. Dr. St.", "“Well,” said he, “I—I don't know…”",
    "end-of-line hyphen-\nation", "ﬁ ligature ﬂ", "Ｆｕｌｌｗｉｄｔｈ", "x²+y³=z⁴ ½ ¼",
    "\ufeffBOM at start", "CRLF\r\nline\r\nends",
]

def paragraphs(path):
    text = open(path, encoding="utf-8").read().replace("\r\n", "\n")
    return [p for p in text.split("\n\n") if p.strip()]


def main():
    tmp = tempfile.mkdtemp()
    shutil.copy(os.path.join(DATA, "gpt1-bpe", "encoder_bpe_40000.json"), os.path.join(tmp, "vocab.json"))
    shutil.copy(os.path.join(DATA, "gpt1-bpe", "vocab_40000.bpe"), os.path.join(tmp, "merges.txt"))
    tok = OpenAIGPTTokenizer.from_pretrained(tmp)
    out = {"transformers": __import__("transformers").__version__,
           "hard": [{"text": s, "ids": tok.encode(s)} for s in HARD],
           "books": []}
    for b in BOOKS:
        ps = paragraphs(os.path.join(DATA, "corpus", "books", b))[:PARAS_PER_BOOK]
        out["books"].append({"book": b, "paragraphs": len(ps), "ids": [tok.encode(p) for p in ps]})
    json.dump(out, open(OUT, "w"))
    print(OUT, sum(len(b["ids"]) for b in out["books"]), "paragraphs")


if __name__ == "__main__":
    main()
