#!/usr/bin/env python3
"""Builds assets/demo/books.txt.gz, the corpus `gpt1 demo` ships with: four public-domain
Project Gutenberg novels by four authors, the Gutenberg header and footer removed (the text
between the "*** START OF" and "*** END OF" lines), CRLF as LF, byte-order mark dropped.
Each book starts with a line `### AUTHOR | TITLE`.

  python3 tools/make_demo_corpus.py BOOKS_DIR   (the folder of the Gutenberg .txt files)
"""
import gzip
import os
import sys

BOOKS = [  # (file, author, title): one novel per author, distinct styles
    ("austen_persuasion.txt", "Jane Austen", "Persuasion"),
    ("twain_tom.txt", "Mark Twain", "The Adventures of Tom Sawyer"),
    ("92.txt", "Edgar Rice Burroughs", "Tarzan and the Jewels of Opar"),
    ("montgomery_gables.txt", "Lucy Maud Montgomery", "Anne of Green Gables"),
]

src = sys.argv[1]
out = []
for f, author, title in BOOKS:
    text = open(os.path.join(src, f), encoding="utf-8-sig").read().replace("\r\n", "\n")
    lines = text.split("\n")
    start = next(i for i, l in enumerate(lines) if l.startswith("*** START OF") or l.startswith("***START OF"))
    end = next(i for i, l in enumerate(lines) if l.startswith("*** END OF") or l.startswith("***END OF"))
    body = "\n".join(lines[start + 1:end]).strip()
    out.append(f"### {author} | {title}\n{body}\n")
data = "\n".join(out).encode("utf-8")
dst = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "assets", "demo", "books.txt.gz")
with open(dst, "wb") as f:
    f.write(gzip.compress(data, compresslevel=9, mtime=0))
print(f"{len(data)} bytes -> {os.path.getsize(dst)} bytes gzip")
