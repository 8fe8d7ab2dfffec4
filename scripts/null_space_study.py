"""How AlphaEdit's null-space rules separate edit keys from corpus keys: the study behind the
README's AlphaEdit notes.

Per window layer, for each rule (the energy-share rule of
:func:`factedit.methods.state.null_space_projector` at several shares, and the reference's
absolute eigenvalue threshold 2e-2, jianghoucheng/AlphaEdit ``get_project``): the null-space
dimension; the corpus leakage trace(P C) / trace(C), i.e. the mean share of a corpus key's
energy that an update in P's range still sees; the median share ‖P k‖² / ‖k‖² of the edit
keys (template means of the first N records' rewrite prompts); and their ratio, the
*selectivity* (how much more of an edit key than of a corpus key the projected update can
use). Forward passes only: no z, no edits.

    python scripts/null_space_study.py --model gemma-3-270m --records 100 --out study.json
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from factedit.methods.keys import compute_keys
from factedit.models import load_model
from factedit.session import EditSession
from factedit.spec import load_spec
from json_out import emit

DATA = Path(os.environ.get("FACTEDIT_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
ENERGY_SHARES = (0.05, 0.02, 0.01, 0.005, 0.002)
REFERENCE_THRESHOLD = 2e-2


def rule_row(eigvals: torch.Tensor, eigvecs: torch.Tensor, keep: torch.Tensor, keys: torch.Tensor):
    """One rule's figures; ``keep`` [d] bool marks the null-space eigenvectors (ascending
    ``eigvals`` [d], ``eigvecs`` [d, d]); ``keys`` [n, d] float64."""
    basis = eigvecs[:, keep]
    leakage = float(eigvals[keep].sum() / eigvals.sum())
    key_share = ((keys @ basis).pow(2).sum(1) / keys.pow(2).sum(1)).median()
    return {
        "null_dim": int(keep.sum()),
        "corpus_leakage": leakage,
        "edit_key_share_median": float(key_share),
        "selectivity": float(key_share) / leakage if leakage > 0 else None,
    }


def layer_rows(C: torch.Tensor, keys: torch.Tensor) -> dict:
    """Every rule at one layer: ``C`` [d, d] = E[k kᵀ], ``keys`` [n, d]."""
    eigvals, eigvecs = torch.linalg.eigh(C.double())
    eigvals = eigvals.clamp_min(0.0)
    keys = keys.double()
    energy = eigvals.cumsum(0) / eigvals.sum()
    rules = {f"energy<={s:g}": energy <= s for s in ENERGY_SHARES}
    rules[f"eigenvalue<{REFERENCE_THRESHOLD:g} (reference)"] = eigvals < REFERENCE_THRESHOLD
    return {
        "trace": float(eigvals.sum()),
        "eigenvalue_median": float(eigvals.median()),
        "rules": {name: rule_row(eigvals, eigvecs, keep, keys) for name, keep in rules.items()},
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--source", type=Path, default=DATA / "counterfact-mass.json")
    parser.add_argument("--records", type=int, default=100)
    parser.add_argument("--corpus", type=Path, default=DATA / "wikitext-2-raw-test.txt")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    lm = load_model(args.model, device="cpu")
    requests = list(load_spec(args.source, limit=args.records).edits)
    session = EditSession(lm, method="alphaedit", corpus=[args.corpus])
    state, layers = session.state, session.layers
    moments = state.second_moments(lm, layers)
    templates = state.templates(lm)
    per_layer = {
        str(layer): layer_rows(
            C, compute_keys(lm, requests, layer, templates, state.template_weights())
        )
        for layer, C in zip(layers, moments, strict=True)
    }
    report = {"model": args.model, "records": len(requests), "layers": layers}
    return emit({**report, "per_layer": per_layer}, args.out)


if __name__ == "__main__":
    main()
