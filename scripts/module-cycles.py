#!/usr/bin/env python3
"""Fails when the modules of a crate depend on each other in a cycle.

Crates cannot form cycles (Cargo refuses them); modules inside one crate can. This reads every
crate's src/ and finds, for each top-level module, which sibling modules it names
(`crate::other`, `super::other` from a top-level module), then looks for a cycle in that graph.
A module's own submodules count as part of it.
"""
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "crates"


def top_module(src: pathlib.Path, file: pathlib.Path) -> str:
    rel = file.relative_to(src).with_suffix("")
    parts = rel.parts
    if parts[0] in ("lib", "main"):
        return "<root>"
    return parts[0]


def strip_comments(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r"/\*.*?\*/", "", text, flags=re.S)


def edges_of(src: pathlib.Path):
    modules = {top_module(src, f) for f in src.rglob("*.rs")}
    edges = {m: set() for m in modules}
    for f in src.rglob("*.rs"):
        if "bin" in f.relative_to(src).parts[:1]:
            continue
        me = top_module(src, f)
        text = strip_comments(f.read_text())
        # `use crate::{a, b::c}` and `crate::a::...` paths.
        names = set(re.findall(r"\bcrate::(\w+)", text))
        for group in re.findall(r"\bcrate::\{([^}]*)\}", text):
            names.update(re.findall(r"(?:^|,)\s*(\w+)", group))
        if len(f.relative_to(src).parts) == 1:  # a top-level module's `super::x` is a sibling
            names.update(re.findall(r"\bsuper::(\w+)", text))
        for n in names:
            if n in modules and n != me and me != "<root>":
                edges[me].add(n)
    return edges


def find_cycle(edges):
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(edges[n]):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def main() -> int:
    failed = False
    crates = sorted(p for p in ROOT.iterdir() if (p / "src").is_dir())
    for crate in crates:
        cycle = find_cycle(edges_of(crate / "src"))
        if cycle:
            failed = True
            print(f"module cycle in crate {crate.name}: {' -> '.join(cycle)}")
    if not failed:
        print(f"no module cycle in {len(crates)} crates")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
