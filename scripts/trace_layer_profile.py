"""MLP indirect effect at the last subject token per layer, averaged over known facts.

The figure behind each preset's recorded ``edit_layer``: for the first N facts of
known-facts.json that the model predicts (greedy first token == the fact's attribute), trace
the MLP sites at the last subject token (10 noise samples, seeded) and average. JSON out.

    python scripts/trace_layer_profile.py --model gemma-3-270m --facts 20
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from factedit.models import load_model
from factedit.tokens import target_token_ids
from factedit.trace.recommend import mlp_last_subject_curve

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--facts", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lm = load_model(args.model, device="cpu")
    curves, scanned = [], 0
    for fact in json.loads((DATA / "known-facts.json").read_text()):
        if len(curves) >= args.facts:
            break
        scanned += 1
        ids = lm.tokenizer(fact["prompt"], return_tensors="pt").input_ids
        with torch.no_grad():
            top = int(lm.model(ids).logits[0, -1].argmax())
        if top != target_token_ids(lm.tokenizer, fact["attribute"])[0]:
            continue
        curves.append(mlp_last_subject_curve(lm, fact["prompt"], fact["subject"], samples=10))
    mean = np.mean(curves, axis=0)
    report = {
        "model": args.model,
        "facts_kept": len(curves),
        "facts_scanned": scanned,
        "mlp_effect_last_subject_token": [round(float(x), 4) for x in mean],
        "peak_layer": int(np.argmax(mean)),
        "peak_effect": float(mean.max()),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
