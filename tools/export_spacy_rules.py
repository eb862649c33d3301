#!/usr/bin/env python3
"""Exports spaCy's English tokenizer rules (prefix, suffix and infix patterns, the URL pattern,
and the special cases) to src/text/spacy_en.json, which the `original` tokenizer mode embeds.
spaCy is MIT-licensed; the patterns are rewritten from Python `re` escapes to Rust regex ones.

  pip install spacy
  python3 tools/export_spacy_rules.py
"""
import json
import os
import re

import spacy

ORTH = spacy.attrs.ORTH
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "text", "spacy_en.json")


def rust_pattern(p):
    p = re.sub(r"\\U([0-9A-Fa-f]{8})", lambda m: "\\x{%X}" % int(m.group(1), 16), p)
    p = re.sub(r"\\u([0-9A-Fa-f]{4})", lambda m: "\\x{%X}" % int(m.group(1), 16), p)
    return p


nlp = spacy.blank("en")
t = nlp.tokenizer
rules = {k: [piece[ORTH] for piece in v] for k, v in sorted(t.rules.items())}
out = {
    "spacy": spacy.__version__,
    "prefix": rust_pattern(t.prefix_search.__self__.pattern),
    "suffix": rust_pattern(t.suffix_search.__self__.pattern),
    "infix": rust_pattern(t.infix_finditer.__self__.pattern),
    "url": rust_pattern(t.url_match.__self__.pattern) if t.url_match else None,
    "token_match": rust_pattern(t.token_match.__self__.pattern) if t.token_match else None,
    "special_cases": rules,
}
json.dump(out, open(OUT, "w", encoding="utf-8"), ensure_ascii=False, indent=0)
print(OUT, len(rules), "special cases")
