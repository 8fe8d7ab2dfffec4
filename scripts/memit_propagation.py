"""Does what one MEMIT layer adds to the residual stream reach the last window layer as it is?

For the first N records of a CounterFact file: z at the window's last layer (as MEMIT
computes it, cached on disk), then the update of one window layer alone, as MEMIT's first
step solves it (its share (z − z_orig) / len(window), λC + KKᵀ). With that update applied,
the residual stream at the subject's last token of each bare prompt is read at every layer
from the edited one to the last, and its change is split three ways: along the share, across
it, and on the massive coordinates (those where the unedited stream's mean magnitude over
the facts exceeds 10× the median coordinate's). MEMIT's layer loop assumes the change stays
along the share and does not grow. JSON out.

    python scripts/memit_propagation.py --model gemma-3-270m --records 32 --layer 2 \
        --out docs/results/memit-propagation-gemma-3-270m.json
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from factedit.delta import AppliedDeltas
from factedit.methods.keys import compute_keys, residual_at_subject
from factedit.methods.memit import MemitSolver
from factedit.methods.mlp_out import weight_space_residuals
from factedit.methods.spread import compute_targets, layer_delta
from factedit.models import load_model
from factedit.session import EditSession
from factedit.spec import load_spec
from json_out import emit

DATA = Path(os.environ.get("FACTEDIT_DATA", Path(__file__).resolve().parents[2] / "shared/data"))


def massive_coordinates(stream: torch.Tensor, factor: float = 10.0) -> list[int]:
    """Coordinates whose mean |value| over the rows of ``stream`` [n, d] exceeds ``factor``
    times the median coordinate's."""
    size = stream.abs().mean(0)
    return torch.nonzero(size > factor * size.median()).flatten().tolist()


def split_change(change: torch.Tensor, share: torch.Tensor, massive: list[int]) -> dict:
    """Mean over facts of the change [n, d] along the share, across it (both without the
    massive coordinates), and its norm on the massive coordinates."""
    change, share = change.double().clone(), share.double().clone()
    on_massive = change[:, massive].norm(dim=-1)
    change[:, massive] = 0
    share[:, massive] = 0
    unit = share / share.norm(dim=-1, keepdim=True)
    along = (change * unit).sum(-1)
    across = (change - along[:, None] * unit).norm(dim=-1)
    return {
        "along_share": float(along.mean()),
        "across_share": float(across.mean()),
        "on_massive": float(on_massive.mean()),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--source", type=Path, default=DATA / "counterfact-mass.json")
    parser.add_argument("--records", type=int, default=32)
    parser.add_argument("--layer", type=int, help="the window layer edited (default: first)")
    parser.add_argument("--corpus", type=Path, default=DATA / "wikitext-2-raw-test.txt")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    lm = load_model(args.model, device="cpu")
    requests = list(load_spec(args.source, limit=args.records).edits)
    session = EditSession(lm, method="memit", corpus=[args.corpus], allow_large_updates=True)
    state, window = session.state, list(session.layers)
    layer = window[0] if args.layer is None else args.layer
    targets = compute_targets(lm, requests, window[-1], state.templates(lm), state.hparams)
    keys = compute_keys(lm, requests, layer, state.templates(lm), state.template_weights())
    share = (targets.z - targets.z_orig) / len(window)
    right, _ = MemitSolver().right(lm, layer, keys.double().T, state)
    delta = layer_delta(lm, layer, weight_space_residuals(lm, layer, keys, share), right)
    read = range(layer, window[-1] + 1)
    before = {i: residual_at_subject(lm, requests, i) for i in read}
    massive = massive_coordinates(before[window[-1]])
    with AppliedDeltas(lm.model) as applied:
        applied.add(delta)
        moved = {i: residual_at_subject(lm, requests, i) - before[i] for i in read}
    rows = [{"layer": i, **split_change(moved[i], share, massive)} for i in read]
    report = {
        "model": args.model,
        "records": len(requests),
        "window": window,
        "edited_layer": layer,
        "share_norm_mean": float(share.norm(dim=-1).mean()),
        "massive_coordinates": massive,
        "change_by_layer": rows,
    }
    return emit(report, args.out)


if __name__ == "__main__":
    main()
