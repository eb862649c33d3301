#!/usr/bin/env python3
"""The house rules of src/, checked: no import circle between files, imports only downwards
through the layers written in docs/architecture.md, no file over 600 lines, no function over
150 lines.

  python3 tools/arch_check.py [--graph]     # exit 1 and a list of what breaks a rule

A file's imports are every `crate::a::b` path in it (in `use` lines and inline) and its
`super::` paths, resolved to the file that defines the module (`src/a/b.rs` or
`src/a/b/mod.rs`, else the nearest enclosing module's file). A file's own `#[cfg(test)]`
modules count as the file. The layers are read from the table in docs/architecture.md between
the markers `<!-- layers -->` and `<!-- /layers -->`: one row per layer, lowest first, naming
the top-level modules (`src/NAME.rs` or `src/NAME/`) in it; a module may import its own layer
and those below it. --graph prints every file's imports.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SRC = os.path.join(ROOT, "src")
MAX_FILE, MAX_FN = 600, 150


def module_of(path):
    """src/a/b.rs -> ('a', 'b'); src/a/mod.rs -> ('a',); src/lib.rs -> ()."""
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def files():
    out = {}
    for d, _, names in os.walk(SRC):
        for n in names:
            if n.endswith(".rs"):
                p = os.path.join(d, n)
                out[module_of(p)] = p
    return out


def resolve(parts, mods):
    """The longest prefix of `parts` that names a file's module."""
    for k in range(len(parts), 0, -1):
        if tuple(parts[:k]) in mods:
            return tuple(parts[:k])
    return None


def strip_comments(text):
    """The code without comments and with every string and char literal emptied (a scanner:
    `//` inside a string and `"` inside a comment must not confuse the regular expressions)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:]) and not (i and (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            out.append('""')
            i = n if end < 0 else end + 1 + len(hashes)
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""')
            i = j + 1
        elif c == "'":
            m = re.match(r"'(\\.[^']*|[^'\\])'", text[i:])
            if m:  # a char literal; otherwise a lifetime
                out.append("' '")
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def use_paths(text):
    """Every path of `use crate::{a::{b, c}, d}` and every inline `crate::a::b`."""
    paths = []
    for m in re.finditer(r"\buse\s+(crate|super)::([^;]*);", text, re.S):
        base = m.group(1)
        paths += [(base, p) for p in expand(m.group(2).replace("\n", " "))]
    for m in re.finditer(r"\b(crate|super)::((?:\w+::)*\w+)", text):
        paths.append((m.group(1), m.group(2)))
    return paths


def expand(tree):
    """`a::{b, c::{d}}` -> ['a::b', 'a::c::d']."""
    tree = tree.strip()
    i = tree.find("{")
    if i < 0:
        return [tree.split(" as ")[0].strip()]
    prefix, inner = tree[:i], tree[i + 1 : tree.rfind("}")]
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        cur += ch
    items.append(cur)
    return [prefix + p for it in items if it.strip() for p in expand(it)]


def without_tests(text):
    """The file without its `#[cfg(test)] mod NAME { ... }` blocks: tests may import anything."""
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def reexports(mods):
    """(facade module, name) -> the module that defines it, from `pub use child::...::name;`
    lines of a folder's mod.rs (a facade: importing `crate::a::X` is importing X's own file)."""
    out = {}
    for mod, path in mods.items():
        text = without_tests(strip_comments(open(path, encoding="utf-8").read()))
        for m in re.finditer(r"\bpub\s+use\s+(self::)?(\w+)::([^;]*);", text, re.S):
            if mod + (m.group(2),) not in mods:
                continue
            for p in expand(m.group(3).replace("\n", " ")):
                parts = [m.group(2)] + [x for x in p.split("::") if x and x != "self"]
                r = resolve(list(mod) + parts[:-1], mods)
                if r is not None:
                    out[(mod, parts[-1].split(" as ")[-1].strip())] = r
    return out


REEXPORTS = {}


def imports(mod, path, mods):
    text = without_tests(strip_comments(open(path, encoding="utf-8").read()))
    # A facade's re-exports of its own children are not its imports.
    text = re.sub(r"\bpub\s+use\s+(self::)?\w+::[^;]*;", lambda m: m.group(0) if mod + (re.match(r"pub\s+use\s+(self::)?(\w+)", m.group(0)).group(2),) not in mods else "", text)
    deps = set()
    paths = use_paths(text)
    # `use child::x` and `self::child::x` in a module's own file name a child module.
    for m in re.finditer(r"\buse\s+(self::)?(\w+)::([^;]*);", text, re.S):
        if (m.group(2) not in ("crate", "super", "std", "core")) and mod + (m.group(2),) in mods:
            paths += [("self", m.group(2) + "::" + p) for p in expand(m.group(3).replace("\n", " "))]
    for base, p in paths:
        parts = [x for x in p.split("::") if x and x != "self"]
        if base == "crate":
            full = parts
        elif base == "self":
            full = list(mod) + parts
        else:
            full = list(mod[:-1])
            while parts and parts[0] == "super":
                full, parts = full[:-1], parts[1:]
            full += parts
        r = resolve(full, mods)
        while r is not None and len(full) > len(r) and (r, full[len(r)]) in REEXPORTS:
            r = REEXPORTS[(r, full[len(r)])]
            full = list(r) + full[len(full) - 1 :]
        if r is not None and r != mod and r != ():
            deps.add(r)
    return deps


def sccs(graph):
    index, low, on, stack, out, n = {}, {}, set(), [], [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return [c for c in out if len(c) > 1]


def layers():
    doc = open(os.path.join(ROOT, "docs", "architecture.md"), encoding="utf-8").read()
    m = re.search(r"<!-- layers -->(.*?)<!-- /layers -->", doc, re.S)
    if not m:
        return None
    rank = {}
    rows = [r for r in m.group(1).splitlines() if r.startswith("|") and "---" not in r]
    for i, row in enumerate(rows[1:]):  # the first row is the header
        cells = [c.strip() for c in row.strip("|").split("|")]
        for name in re.findall(r"`(\w+)`", cells[1] if len(cells) > 1 else ""):
            rank[name] = i
    return rank


def long_functions(path):
    lines = strip_comments(open(path, encoding="utf-8").read()).split("\n")
    found = []
    fn_re = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"\"\s+)?fn\s+(\w+)")
    for i, line in enumerate(lines):
        m = fn_re.match(line)
        if not m:
            continue
        depth, started = 0, False
        for j in range(i, len(lines)):
            code = lines[j]
            if not started and ";" in code and "{" not in code:
                break  # a declaration without a body
            depth += code.count("{") - code.count("}")
            started = started or "{" in code
            if started and depth <= 0:
                if j - i + 1 > MAX_FN:
                    found.append((m.group(7), i + 1, j - i + 1))
                break
    return found


def main():
    mods = files()
    REEXPORTS.update(reexports(mods))
    graph = {m: imports(m, p, mods) for m, p in mods.items()}
    problems = []
    if "--graph" in sys.argv:
        for m in sorted(graph):
            print("::".join(m) or "crate", "->", ", ".join(sorted("::".join(d) for d in graph[m])))
    # A folder's mod.rs importing its own children is its front door, not a circle.
    down = {m: {d for d in ds if d[: len(m)] != m} for m, ds in graph.items()}
    for comp in sccs(down):
        names = sorted("::".join(c) for c in comp)
        problems.append(f"import circle between files: {', '.join(names)}")
    rank = layers()
    if rank is None:
        problems.append("docs/architecture.md has no layer table (<!-- layers --> ... <!-- /layers -->)")
    else:
        for m, deps in sorted(graph.items()):
            if not m or m[0] in ("cli", "main"):
                continue
            if m[0] not in rank:
                problems.append(f"src/{m[0]}: not in docs/architecture.md's layer table")
                continue
            for d in sorted(deps):
                if d and d[0] in rank and rank[d[0]] > rank[m[0]]:
                    problems.append(
                        f"{'::'.join(m)} imports {'::'.join(d)}: layer {rank[d[0]]} above its own {rank[m[0]]}"
                    )
    for m, p in sorted(mods.items()):
        n = sum(1 for _ in open(p, encoding="utf-8"))
        rel = os.path.relpath(p, ROOT)
        if n > MAX_FILE:
            problems.append(f"{rel}: {n} lines (at most {MAX_FILE})")
        for name, line, length in long_functions(p):
            problems.append(f"{rel}:{line}: fn {name} is {length} lines (at most {MAX_FN})")
    for p in problems:
        print(p)
    print(f"{len(mods)} files, {sum(len(d) for d in graph.values())} imports between them, "
          f"{len(problems)} problems")
    sys.exit(1 if problems else 0)


main()
