"""A preset's ROME edit layer from its aggregate trace and its key selectivity. JSON out.

Causal tracing alone ranks layers by the MLP indirect effect at the last subject token; in
small models that curve is flat over several layers, and the layers on the plateau differ in
how much an edit there leaks into *other* subjects (scripts/key_selectivity.py). The rule:
the candidate layers are those whose MLP effect is within ``--band`` (15 %) of the peak, and
among them the one whose keys leak least into other subjects of the same relation is chosen.
Both inputs come from known-facts.json and WikiText-2 only, never from CounterFact.

    python scripts/trace_layer_profile.py --model gemma-3-270m --facts 20 --out profile.json
    python scripts/key_selectivity.py --model gemma-3-270m --layers 0-8 --out selectivity.json
    python scripts/choose_edit_layer.py profile.json selectivity.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def last_subject_mlp_curve(trace: dict) -> list[float | None]:
    """The [L] MLP effect at the last subject token from an aggregate trace JSON
    (``factedit trace --facts``) or a ``scripts/trace_layer_profile.py`` JSON."""
    if "mlp_effect_last_subject_token" in trace:
        return trace["mlp_effect_last_subject_token"]
    return trace["effects"]["mlp"][trace["groups"].index("last subject token")]


def choose(trace: dict, selectivity: dict, band: float) -> dict:
    """The chosen layer, its candidates and the numbers behind the choice."""
    curve = last_subject_mlp_curve(trace)
    peak = max(x for x in curve if x is not None)
    leak = {int(k): v["same_relation_mean"] for k, v in selectivity["leakage_by_layer"].items()}
    candidates = [
        layer
        for layer, effect in enumerate(curve)
        if effect is not None and effect >= (1 - band) * peak and layer in leak
    ]
    if not candidates:
        raise SystemExit("no layer of the trace's plateau has a selectivity measurement")
    layer = min(candidates, key=lambda x: leak[x])
    return {
        "layer": layer,
        "mlp_effect": curve[layer],
        "peak_layer": curve.index(peak),
        "peak_effect": peak,
        "band": band,
        "candidates": {c: {"mlp_effect": curve[c], "leakage": leak[c]} for c in candidates},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace", type=Path, help="aggregate trace or layer-profile JSON")
    parser.add_argument("selectivity", type=Path, help="scripts/key_selectivity.py output")
    parser.add_argument("--band", type=float, default=0.15)
    args = parser.parse_args()
    trace = json.loads(args.trace.read_text())
    selectivity = json.loads(args.selectivity.read_text())
    print(json.dumps(choose(trace, selectivity, args.band), indent=2))


if __name__ == "__main__":
    main()
