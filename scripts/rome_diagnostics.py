"""Why a ROME edit leaks or is slow: the README's diagnostic figures, per CounterFact record.

    python scripts/rome_diagnostics.py values  --model gemma-3-270m --layer 4 --records 8
    python scripts/rome_diagnostics.py values  --model gemma-3-270m --layer 4 --v-lr 0.06
    python scripts/rome_diagnostics.py leakage --model gemma-3-270m --layer 2 --records 3,6
    python scripts/rome_diagnostics.py profile --model smollm2-135m --layer 4
    python scripts/rome_diagnostics.py positions --model smollm2-135m --layer 4 --records 20

``values``: ‖δ‖ / ‖v‖ of the optimised value, its per-step NLL curve (``nll``: the NLL term of
the loss) and total-loss curve (``loss``: NLL + KL + decay, the quantity the optimisation now
stops on, ``loss_stop``), and ‖v*‖ / ‖W k*‖ (the factor a post-MLP norm lets ROME divide v*
by). ``leakage``: for each neighbourhood prompt,
the share of the update each token's key picks up, uᵀk / uᵀk*. ``profile``: torch.profiler
table (grouped by input shape) of two v*-steps. ``positions``: positions per v*-step of the
padded batch, whole rows against the cached-prefix suffixes. Data: $FACTEDIT_DATA, else
../shared/data beside the repository.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path

import torch

from factedit.hooks import Trace
from factedit.methods.hparams import RomeHParams
from factedit.methods.rank_one import compute_key, norm_matched_value
from factedit.methods.value import HookSite, optimise_value, rewrite_prompts
from factedit.models import load_model
from factedit.session import EditSession
from factedit.spec import load_spec
from factedit.tokens import target_token_ids

DATA = Path(os.environ.get("FACTEDIT_DATA", Path(__file__).resolve().parents[2] / "shared/data"))


def _records(text: str) -> list[int]:
    """ "8" -> the first 8 records; "3,6" -> records 3 and 6."""
    return [int(x) for x in text.split(",")] if "," in text else list(range(int(text)))


def values(session: EditSession, requests, hp: RomeHParams) -> None:
    lm, layer = session.lm, session.layers[0]
    templates = session.state.templates(lm)
    site = HookSite.down_proj(lm, layer)
    for r in requests:
        value = optimise_value(lm, r, site, templates, hp)
        log = value.log
        k_star = compute_key(lm, r, layer, templates)
        _, v_over_wk = norm_matched_value(lm, layer, k_star, value.v_star)
        ratio = log["delta_norm"] / log["v_orig_norm"]
        nll = [round(s["nll"], 2) for s in log["losses"]]
        loss = [round(s["total"], 2) for s in log["losses"]]
        row = {"subject": r.subject, "delta_over_v": round(ratio, 2)}
        print(json.dumps({**row, "v_star_over_wk": round(v_over_wk, 2), "nll": nll, "loss": loss}))


def positions(session: EditSession, requests) -> None:
    """Positions one v*-step computes (rewriting rows, padded): whole rows vs suffixes."""
    lm = session.lm
    whole = suffix = 0
    for r in requests:
        target = target_token_ids(lm.tokenizer, r.target_new)
        rows = rewrite_prompts(lm, r, session.state.templates(lm))
        lengths = [len(p.input_ids) + len(target) - 1 for p in rows]
        whole += max(lengths) * len(rows)
        pairs = zip(lengths, rows, strict=True)
        suffix += max(n - p.last_subject_index for n, p in pairs) * len(rows)
    print(
        json.dumps(
            {
                "records": len(requests),
                "whole_rows": whole,
                "suffixes": suffix,
                "ratio": round(whole / suffix, 2),
            }
        )
    )


@torch.no_grad()
def leakage(session: EditSession, requests) -> None:
    lm, layer = session.lm, session.layers[0]
    C = session.state.second_moment(lm, layer).double()
    for r in requests:
        k = compute_key(lm, r, layer, session.state.templates(lm)).double()
        u = torch.linalg.solve(C, k)
        print(f"== {r.subject}: {r.target_true} -> {r.target_new}")
        for prompt in r.neighborhood:
            ids = lm.tokenizer(prompt, return_tensors="pt").input_ids.to(lm.device)
            name = lm.arch.down_proj_name(layer)
            with Trace(lm.model, name, retain_input=True, retain_output=False, stop=True) as tr:
                lm.model(input_ids=ids)
            share = (tr.input[0].double().cpu() @ u) / (u @ k)
            tokens = lm.tokenizer.convert_ids_to_tokens(ids[0])
            pairs = zip(tokens, share.tolist(), strict=True)
            print("  ", " ".join(f"{t}:{v:+.2f}" for t, v in pairs))


def profile(session: EditSession, request, hp: RomeHParams) -> None:
    hp = dataclasses.replace(hp, v_num_grad_steps=2)
    lm = session.lm
    site = HookSite.down_proj(lm, session.layers[0])
    templates = session.state.templates(lm)
    acts = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=acts, record_shapes=True) as prof:
        optimise_value(lm, request, site, templates, hp)
    table = prof.key_averages(group_by_input_shape=True)
    print(table.table(sort_by="self_cpu_time_total", row_limit=20, max_shapes_column_width=60))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["values", "leakage", "profile", "positions"])
    parser.add_argument("--model", default="gemma-3-270m")
    parser.add_argument("--layer", type=int, required=True)
    parser.add_argument("--records", default="8")
    parser.add_argument("--v-lr", type=float, default=RomeHParams().v_lr)
    args = parser.parse_args()
    lm = load_model(args.model, device="cpu")
    hparams = {"v_lr": args.v_lr}
    session = EditSession(
        lm,
        method="rome",
        layers=[args.layer],
        hparams=hparams,
        corpus=[DATA / "wikitext-2-raw-test.txt"],
    )
    indices = _records(args.records)
    all_requests = load_spec(DATA / "counterfact-dev.json", limit=max(indices) + 1).edits
    requests = [all_requests[i] for i in indices]
    if args.what == "values":
        values(session, requests, session.hparams)
    elif args.what == "leakage":
        leakage(session, requests)
    elif args.what == "positions":
        positions(session, requests)
    else:
        profile(session, requests[0], session.hparams)


if __name__ == "__main__":
    main()
