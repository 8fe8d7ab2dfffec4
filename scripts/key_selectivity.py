"""How subject-specific ROME's keys are, layer by layer (the leakage a rank-one edit causes).

A ROME update at layer l changes the down-projection's output for any key k by
(uᵀk / uᵀk*) · (v* − W k*), with u = C⁻¹k*. For two different subjects i ≠ j of
known-facts.json, the *leakage* of an edit of i into j is |uᵢᵀkⱼ| / uᵢᵀkᵢ, where k is the
down-projection's input at the subject's last token. This script reports its mean and 90th
percentile over all ordered pairs (and the mean over same-relation pairs), per layer, from
the known facts only (no CounterFact record is used), with C collected from WikiText-2
exactly as an edit collects it. JSON out.

    python scripts/key_selectivity.py --model gemma-3-270m --layers 0-8 --facts 100
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from factedit.hooks import Trace
from factedit.methods.hparams import RomeHParams
from factedit.models import load_model
from factedit.models.loading import LoadedModel
from factedit.stats import second_moment
from factedit.tokens import locate_subject

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def parse_range(text: str) -> list[int]:
    """ "0-8" or "2,4,6" -> list of layer indices."""
    if "-" in text:
        lo, hi = (int(x) for x in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(x) for x in text.split(",")]


@torch.no_grad()
def subject_keys(lm: LoadedModel, layer: int, facts: list[dict]) -> torch.Tensor:
    """Down-projection inputs at each fact's last subject token: [n_facts, d_in], float64."""
    rows = []
    for fact in facts:
        located = locate_subject(lm.tokenizer, fact["prompt"], fact["subject"])
        ids = torch.tensor([located.input_ids], device=lm.device)
        name = lm.arch.down_proj_name(layer)
        with Trace(lm.model, name, retain_input=True, retain_output=False, stop=True) as tr:
            lm.model(input_ids=ids, use_cache=False)
        rows.append(tr.input[0, located.last_subject_index].double().cpu())
    return torch.stack(rows)


def leakage(C: torch.Tensor, keys: torch.Tensor, relations: list[str]) -> dict[str, float]:
    """|uᵢᵀkⱼ| / uᵢᵀkᵢ over i ≠ j: mean and 90th percentile over all pairs, and the mean over
    pairs of the same relation (what CounterFact's neighbourhood prompts are).

    ``keys`` [n, d], ``C`` [d, d], ``relations`` n relation ids.
    """
    U = torch.linalg.solve(C.double().cpu(), keys.T)  # [d, n], column i = C⁻¹kᵢ
    M = keys @ U  # [n, n], M[j, i] = kⱼᵀ C⁻¹ kᵢ
    ratio = (M / M.diagonal()[None, :]).abs()
    off = ~torch.eye(len(keys), dtype=torch.bool)
    rel = torch.tensor([[a == b for b in relations] for a in relations]) & off
    return {
        "mean": float(ratio[off].mean()),
        "p90": float(ratio[off].quantile(0.9)),
        "same_relation_mean": float(ratio[rel].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--layers", default="0-8")
    parser.add_argument("--facts", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lm = load_model(args.model, device=args.device)
    seen, facts = set(), []
    for fact in json.loads((DATA / "known-facts.json").read_text()):
        if fact["subject"] not in seen and len(facts) < args.facts:
            seen.add(fact["subject"])
            facts.append(fact)
    corpus = [DATA / "wikitext-2-raw-test.txt"]
    n_tokens = RomeHParams().mom2_n_tokens
    per_layer = {}
    for layer in parse_range(args.layers):
        C = second_moment(lm, layer, corpus=corpus, n_tokens=n_tokens, show_progress=False)
        relations = [f["relation_id"] for f in facts]
        per_layer[layer] = leakage(C, subject_keys(lm, layer, facts), relations)
        print(layer, per_layer[layer], flush=True)
    report = {
        "model": args.model,
        "facts": len(facts),
        "mom2_n_tokens": n_tokens,
        "leakage_by_layer": per_layer,
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
