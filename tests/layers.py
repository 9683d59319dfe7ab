#!/usr/bin/env python3
"""The layer check: a top-level module of src/ may use only the modules
listed before it in LAYERS, so that dependencies point one way and no
import circle can form. Fails on a `crate::` path that points up (printing
the file, line and text), on a top-level module missing from LAYERS, and on
a Rust file under src/ or benches/ longer than MAX_LINES.

Run from anywhere: python3 tests/layers.py
"""

import pathlib
import re
import sys

# Bottom first. A module may use any module before it, none after it.
LAYERS = [
    "domain",      # statuses, reports, the merge rule: no I/O
    "config",      # settings, checked at load
    "tls",         # certificates for the listener and PostgreSQL
    "metrics",     # the Prometheus recorder and the per-request handles
    "courier",     # waking many tasks of another runtime at once
    "telemetry",   # logging, request ids
    "cli",         # the command line's grammar
    "db",          # every SQL statement
    "auth",        # webhook passwords, read-API tokens, the limiter
    "error",       # the HTTP error answer
    "body",        # reading request bodies within limits
    "ingest",      # the writer: group commit of reports
    "live",        # the live-events hub and its readers
    "forward",     # pushing changes to back-office systems
    "unreported",  # the sweep that marks silent messages
    "model",       # the JSON shapes of messages and changes
    "export",      # CSV and NDJSON exports
    "state",       # what every handler shares
    "api",         # HTTP handlers
    "console",     # the supervisors' page
    "operations",  # /metrics, /healthz, /readyz
    "startup",     # the HTTP server put together
    "commands",    # what each command-line command does
]
# The crate's roots: they declare and start everything.
ROOTS = {"lib", "main"}
MAX_LINES = 400

root = pathlib.Path(__file__).resolve().parent.parent
src = root / "src"
rank = {name: i for i, name in enumerate(LAYERS)}
failures = []


def top_module(path):
    first = path.relative_to(src).parts[0]
    return first[:-3] if first.endswith(".rs") else first


def used_modules(text, start):
    """Top-level names a `crate::` path at `start` names: one, or each of a
    `crate::{a, b::c}` group."""
    if text[start] != "{":
        return [re.match(r"\w+", text[start:]).group(0)]
    depth, end = 1, start + 1
    while depth:
        depth += {"{": 1, "}": -1}.get(text[end], 0)
        end += 1
    names, depth, item = [], 0, ""
    for c in text[start + 1 : end - 1] + ",":
        depth += {"{": 1, "}": -1}.get(c, 0)
        if c == "," and depth == 0:
            if item.strip():
                names.append(re.match(r"\s*(\w+)", item).group(1))
            item = ""
        else:
            item += c
    return names


for path in sorted(src.rglob("*.rs")):
    me = top_module(path)
    if me in ROOTS:
        continue
    if me not in rank:
        failures.append(f"{path.relative_to(root)}: module `{me}` is not in LAYERS of tests/layers.py; add it where it belongs")
        continue
    lines = path.read_text().split("\n")
    text = "\n".join(re.sub(r"//.*", "", line) for line in lines)
    for m in re.finditer(r"\bcrate::", text):
        for used in used_modules(text, m.end()):
            if used in ("self", me) or used not in rank:
                continue
            if rank[used] > rank[me]:
                n = text.count("\n", 0, m.start())
                failures.append(
                    f"{path.relative_to(root)}:{n + 1}: `{me}` uses `{used}`, a layer above it:\n    {lines[n].strip()}"
                )

for path in sorted([*src.rglob("*.rs"), *(root / "benches").rglob("*.rs")]):
    count = path.read_text().count("\n")
    if count > MAX_LINES:
        failures.append(f"{path.relative_to(root)}: {count} lines (at most {MAX_LINES}); split it along its responsibilities")

if failures:
    print("\n".join(failures))
    sys.exit(1)
print(f"layers: {len(LAYERS)} modules, every `crate::` path points down; no file over {MAX_LINES} lines")
