"""How much of z each MEMIT layer delivers: the diagnostic behind the README's MEMIT notes.

For the first N records of a CounterFact file, one MEMIT batch over the model's window: per
layer, the norm of its share of the residual target, the share its update delivers at the
batch's keys in W's output space and in the residual stream (through the MLP output norm
where there is one), then how much of z − z_orig the edited model reaches at the last window
layer, and ES / PS / NS before and after. JSON out.

    python scripts/memit_reach.py --model gemma-3-270m --records 16 --out reach.json
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from factedit.delta import AppliedDeltas
from factedit.evaluate.measure import measure_request
from factedit.evaluate.metrics import request_metrics, summarize
from factedit.methods.keys import compute_keys, residual_at_subject
from factedit.methods.memit import MemitSolver
from factedit.methods.mlp_out import output_change, weight_space_residuals
from factedit.methods.spread import compute_targets, spread_over_layers
from factedit.models import load_model
from factedit.session import EditSession
from factedit.spec import load_spec
from json_out import emit

DATA = Path(os.environ.get("FACTEDIT_DATA", Path(__file__).resolve().parents[2] / "shared/data"))


def _reach(achieved: torch.Tensor, wanted: torch.Tensor) -> float:
    """Mean over facts of ⟨achieved, wanted⟩ / ‖wanted‖² (1 = all of it)."""
    return float(((achieved * wanted).sum(-1) / wanted.pow(2).sum(-1)).mean())


def scores(lm, requests) -> dict[str, float]:
    return summarize([request_metrics(measure_request(lm, r, generation=False)) for r in requests])


def layer_rows(lm, requests, session, targets, deltas) -> list[dict]:
    """Replays the layer loop with the computed deltas, measuring each layer's share."""
    layers, templates = session.layers, session.state.templates(lm)
    rows = []
    with AppliedDeltas(lm.model) as applied:
        for i, (layer, delta) in enumerate(zip(layers, deltas, strict=True)):
            keys = compute_keys(lm, requests, layer, templates, session.state.template_weights())
            share = (targets.z - residual_at_subject(lm, requests, layers[-1])) / (len(layers) - i)
            wanted_w = weight_space_residuals(lm, layer, keys, share)
            in_out = lm.arch.weight_is_in_out(layer)
            dense = delta.dense().double()
            moved_w = keys.double() @ (dense if in_out else dense.T)
            moved = output_change(lm, layer, keys, delta.dense())
            rows.append(
                {
                    "layer": layer,
                    "share_norm_mean": float(share.norm(dim=-1).mean()),
                    "weight_space_reach": _reach(moved_w, wanted_w),
                    "residual_reach": _reach(moved, share.double()),
                }
            )
            applied.add(delta)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--source", type=Path, default=DATA / "counterfact-dev.json")
    parser.add_argument("--records", type=int, default=16)
    parser.add_argument("--corpus", type=Path, default=DATA / "wikitext-2-raw-test.txt")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    lm = load_model(args.model, device="cpu")
    requests = list(load_spec(args.source, limit=args.records).edits)
    session = EditSession(lm, method="memit", corpus=[args.corpus], allow_large_updates=True)
    state, layers = session.state, session.layers
    state.second_moments(lm, layers)
    targets = compute_targets(lm, requests, layers[-1], state.templates(lm), state.hparams)
    deltas = spread_over_layers(lm, requests, layers, targets, state, MemitSolver())
    before = scores(lm, requests)
    rows = layer_rows(lm, requests, session, targets, deltas)
    with AppliedDeltas(lm.model) as applied:
        for delta in deltas:
            applied.add(delta)
        reached = residual_at_subject(lm, requests, layers[-1]) - targets.z_orig
        after = scores(lm, requests)
    report = {
        "model": args.model,
        "records": len(requests),
        "layers": list(layers),
        "z": targets.summary(),
        "per_layer": rows,
        "z_reached": _reach(reached.double(), (targets.z - targets.z_orig).double()),
        "unedited": {k: before[k] for k in ("es", "ps", "ns") if k in before},
        "edited": {k: after[k] for k in ("es", "ps", "ns") if k in after},
    }
    return emit(report, args.out)


if __name__ == "__main__":
    main()
