#!/usr/bin/env python3
"""Prints the module graph of src/ and fails on a circle.

Each file is a node (src/cdc/engine.rs is `cdc::engine`, a mod.rs is its
folder's module); an edge is a path the file names outside its tests:
`crate::a::b`, `super::x` and, in a folder's mod.rs, its own children.
Edges between folders are checked too (a file's folder -> the other's).
Usage: scripts/layout.py [--graph]
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src"


def module_of(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] in ("mod", "lib"):
        parts = parts[:-1]
    return tuple(parts)


def strip(text):
    """The code without comments, string and char literals."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            i = text.find("\n", i)
            i = n if i < 0 else i
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif c == "r" and re.match(r'r#*"', text[i:]) and not re.match(r"\w", text[i - 1 : i] or " "):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            j = text.find('"' + hashes, i + len(hashes) + 2)
            i = n if j < 0 else j + 1 + len(hashes)
            out.append('""')
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            i = j + 1
            out.append('""')
        elif c == "'" and re.match(r"'(\\.[^']*|[^\\'])'", text[i:]):
            i += re.match(r"'(\\.[^']*|[^\\'])'", text[i:]).end()
            out.append("' '")
        else:
            out.append(c)
            i += 1
    return "".join(out)


def code_of(text):
    text = strip(text)
    # Test code may import anything: drop `#[cfg(test)]` modules.
    cut = re.search(r"^#\[cfg\(test\)\]\s*\n\s*mod \w+ \{", text, re.M)
    return text[: cut.start()] if cut else text


def paths(code, root):
    """The paths under `root` (crate or super) that the code names, use
    trees expanded one level: `root::a::{b, c::D}` -> a::b, a::c::D."""
    out = []
    for m in re.finditer(r"\b" + root + r"((?:::\w+)*)::\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}", code):
        head = m.group(1).strip(":").split("::") if m.group(1) else []
        for item in re.split(r",(?![^{]*\})", m.group(2)):
            first = re.match(r"\s*(\w+(?:::\w+)*)", item)
            if first:
                out.append(head + first.group(1).split("::"))
    for m in re.finditer(r"\b" + root + r"((?:::\w+)+)(?!\w|::)", code):
        out.append(m.group(1).strip(":").split("::"))
    return out


def main():
    files = [p for p in ROOT.rglob("*.rs") if p.name != "main.rs"]
    modules = {module_of(p): p for p in files}

    def resolve(path):
        # The longest prefix of `path` that is a module of ours.
        for n in range(len(path), 0, -1):
            if tuple(path[:n]) in modules:
                return tuple(path[:n])
        return None

    edges = {}
    for mod, path in modules.items():
        code = code_of(path.read_text())
        out = set()
        for p in paths(code, "crate"):
            t = resolve(p)
            if t:
                out.add(t)
        parent = mod[:-1]
        for p in paths(code, "super"):
            t = resolve(list(parent) + p)
            if t:
                out.add(t)
        if path.name == "mod.rs":
            children = {m.group(1) for m in re.finditer(r"^\s*(?:pub(?:\([^)]*\))? )?mod (\w+);", code, re.M)}
            for m in re.finditer(r"(?<![:\w])(\w+)::", code):
                if m.group(1) in children:
                    out.add(mod + (m.group(1),))
        out.discard(mod)
        edges[mod] = out

    def cycles(graph):
        found, state, stack = [], {}, []

        def visit(n):
            state[n] = 1
            stack.append(n)
            for m in sorted(graph.get(n, ())):
                if state.get(m) == 1:
                    found.append(stack[stack.index(m):] + [m])
                elif not state.get(m):
                    visit(m)
            stack.pop()
            state[n] = 2

        for n in sorted(graph):
            if not state.get(n):
                visit(n)
        return found

    folders = {}
    for a, outs in edges.items():
        for b in outs:
            fa, fb = a[:1], b[:1]
            if fa != fb:
                folders.setdefault(fa, set()).add(fb)
    name = lambda m: "::".join(m) or "crate"
    if "--graph" in sys.argv:
        for a in sorted(edges):
            print(f"{name(a)} -> {', '.join(name(b) for b in sorted(edges[a]))}")
    bad = [("file", c) for c in cycles(edges)] + [("folder", c) for c in cycles(folders)]
    for kind, c in bad:
        print(f"circle between {kind}s: {' -> '.join(name(m) for m in c)}")
    if bad:
        sys.exit(1)
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} edges, no circles")


main()
