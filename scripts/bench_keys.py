"""MEMIT's per-layer reads: the prompt stream against a full forward pass per read.

For N CounterFact facts (counterfact-mass.json) and the preset's window, the keys at every
window layer (each fact's rewrite prompt under every context template) and the current z at
the last window layer (bare prompts), read layer by layer as MEMIT's loop does, with no
update in between (the update changes values, not cost):

- ``stream``: :class:`factedit.methods.stream.PromptStream` (the residual entering the
  current layer kept; each read and each move runs only the layers it needs);
- ``full``: ``compute_keys`` and ``residual_at_subject`` from the embeddings every time.

Median of ``--repeats`` runs each, the ratio, and the largest difference between the two.

    PYTHONPATH=src python scripts/bench_keys.py --facts 100 --out docs/bench/keys-cpu.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from factedit.methods.keys import compute_keys, residual_at_subject, template_mean
from factedit.methods.stream import PromptStream
from factedit.methods.value import rewrite_prompts
from factedit.models import load_model
from factedit.session import EditSession
from factedit.spec import load_spec
from json_out import emit

DATA = Path(os.environ.get("FACTEDIT_DATA", Path(__file__).resolve().parents[2] / "shared/data"))


def stream_reads(lm, requests, layers, templates, rows):
    prompts = [p for r in requests for p in rewrite_prompts(lm, r, templates)]
    bare = [p for r in requests for p in rewrite_prompts(lm, r, ["{}"])]
    keys_stream = PromptStream(lm, prompts, layers[0], rows)
    bare_stream = PromptStream(lm, bare, layers[0], rows)
    out = []
    for i, layer in enumerate(layers):
        if i > 0:
            keys_stream.advance(layer)
            bare_stream.advance(layer)
        keys = keys_stream.at_subject(lm.arch.down_proj_name(layer), module_input=True)
        z = bare_stream.at_subject(lm.arch.layer_name(layers[-1]), module_input=False)
        out.append((template_mean(keys, len(requests)), z))
    return out


def full_reads(lm, requests, layers, templates, rows):
    return [
        (
            compute_keys(lm, requests, layer, templates, rows_per_pass=rows),
            residual_at_subject(lm, requests, layers[-1], rows_per_pass=rows),
        )
        for layer in layers
    ]


def timed(fn, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--facts", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--records", type=Path, default=DATA / "counterfact-mass.json")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    lm = load_model(args.model, device="cpu")
    requests = list(load_spec(args.records, limit=args.facts).edits)
    session = EditSession(lm, method="memit", layers="auto", requests=requests)
    layers, rows = list(session.layers), session.hparams.key_batch_rows
    templates = session.state.templates(lm)
    stream_s, fast = timed(
        lambda: stream_reads(lm, requests, layers, templates, rows), args.repeats
    )
    full_s, slow = timed(lambda: full_reads(lm, requests, layers, templates, rows), args.repeats)
    diff = max(
        float((a - b).abs().max())
        for pair_a, pair_b in zip(fast, slow, strict=True)
        for a, b in zip(pair_a, pair_b, strict=True)
    )
    report = {
        "benchmark": "memit-layer-reads",
        "model": lm.name,
        "facts": args.facts,
        "layers": layers,
        "templates": len(templates),
        "threads": torch.get_num_threads(),
        "stream_seconds": stream_s,
        "full_seconds": full_s,
        "speedup": full_s / stream_s,
        "max_abs_diff": diff,
    }
    return emit(report, args.out)


if __name__ == "__main__":
    main()
