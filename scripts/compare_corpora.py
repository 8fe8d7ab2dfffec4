"""Compare corpora for C on CounterFact: a text file vs text sampled from the model itself.

    PYTHONPATH=src python scripts/compare_corpora.py [--model gemma-3-270m] [--limit 200]
        [--records ../shared/data/counterfact-dev.json]
        [--corpus ../shared/data/wikitext-2-raw-test.txt] [--tokens N] [--sampled-tokens N]
        [--cosines 5000,10000,20000] [--threads N] [--device auto] [--out FILE]

For each corpus, ``text`` (--corpus) and ``model`` (sampled from the model, see
``src/factedit/stats/sampled.py``; sampled once and cached under $FACTEDIT_HOME/corpora), the
script prepares the corpus, collects C at the edit layer (cached too) and runs the CounterFact
evaluation of the first --limit records as ``factedit eval FILE --limit N --no-generation``
does: each edit alone on the unedited model, ES/PS/NS, S and EM/PM/NM. --tokens / --sampled-
tokens set the token vectors in C (default: each corpus kind's default, 100,000 for a text
file and factedit.stats.choice.SAMPLED_N_TOKENS for the sampled corpus).

JSON on stdout (and in --out): the settings, the unedited row, per corpus the edited row, its
files, ``n_tokens`` (vectors in C), ``corpus_tokens`` (stream tokens in the files) and seconds
(corpus: sampling or nothing; stats: C; eval), and how far apart the two C are as an edit sees
them: cos(u_text, u_model), u = C⁻¹k* for each record's k* (median, min). --cosines n1,n2,...
adds per corpus the median cos(u_n, u_full), C_n from the first n tokens of the same files.
On a shared, busy machine pass --threads 1. The edited row's ``skipped`` lists the indices of
the edits a guard refused (``EvalResult.refused``; they are kept out of the averages). The
--records and --corpus defaults are under $FACTEDIT_DATA when it is set.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("FACTEDIT_DATA", REPO.parent / "shared" / "data"))


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="gemma-3-270m")
    p.add_argument("--records", type=Path, default=DATA / "counterfact-dev.json")
    p.add_argument("--limit", type=int, default=200, help="first N CounterFact records")
    p.add_argument("--corpus", type=Path, default=DATA / "wikitext-2-raw-test.txt")
    p.add_argument("--tokens", type=int, default=None, help="vectors in C, text corpus")
    p.add_argument("--sampled-tokens", type=int, default=None, help="vectors in C, sampled")
    p.add_argument("--cosines", default="", help="prefix sizes n for cos(u_n, u_full)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args(argv)


def prepare(lm, layer: int, corpus: list[str], n_tokens: int | None) -> dict:
    """The corpus made real (timed), then C [d_in, d_in] at ``layer`` (timed)."""
    from factedit.stats.choice import choose_corpus
    from factedit.stats.corpus import prepare_corpus, token_stream
    from factedit.stats.moment import second_moment

    t0 = time.perf_counter()
    choice, n = prepare_corpus(choose_corpus(corpus), lm=lm, n_tokens=n_tokens, seq_len=256)
    t1 = time.perf_counter()
    paths = list(choice.paths)
    c = second_moment(lm, layer, corpus=paths, n_tokens=n)
    t2 = time.perf_counter()
    return {
        "kind": choice.kind,
        "files": [str(p) for p in paths],
        "n_tokens": n,
        "corpus_tokens": len(token_stream(lm.tokenizer, paths, sys.maxsize)),
        "seconds": {"corpus": round(t1 - t0, 1), "stats": round(t2 - t1, 1)},
        "C": c,
    }


def evaluate(lm, spec, paths: list[str], n_tokens: int) -> tuple[dict, dict, float]:
    """(unedited row, edited row, seconds): independent edits, no generation."""
    from factedit.evaluate.runner import EvalOptions, run_independent
    from factedit.session import EditSession

    hparams = {**spec.hparams, "mom2_n_tokens": n_tokens}
    session = EditSession(
        lm,
        method=spec.method,
        layers=spec.layers,
        hparams=hparams,
        corpus=paths,
        seed=spec.seed,
        requests=spec.edits,
    )
    start = time.perf_counter()
    result = run_independent(
        lm,
        spec.edits,
        session,
        kind=spec.kind,
        options=EvalOptions(generation=False, seed=spec.seed),
    )
    refused = [o.index for o in result.refused]
    edited = {**_round(result.edited), "skipped": refused}
    return _round(result.unedited), edited, time.perf_counter() - start


def _round(row: dict) -> dict:
    return {k: round(v, 4) for k, v in row.items()}


def subject_keys(lm, spec, layer: int):
    """k* of every record [N, d_in] (template-averaged, as the edit computes it)."""
    import torch

    from factedit.methods.hparams import RomeHParams
    from factedit.methods.rank_one import compute_key
    from factedit.methods.templates import context_templates

    hp = RomeHParams.from_overrides(spec.hparams)
    templates = context_templates(
        lm, hp.context_template_lengths, hp.context_templates_per_length, seed=spec.seed
    )
    with torch.no_grad():
        return torch.stack([compute_key(lm, r, layer, templates).cpu() for r in spec.edits])


def cosines(c_a, c_b, keys) -> list[float]:
    """cos(C_a⁻¹k, C_b⁻¹k) for each row k of ``keys`` [N, d] (solved in float64)."""
    import torch

    u_a = torch.linalg.solve(c_a.double(), keys.double().T).T
    u_b = torch.linalg.solve(c_b.double(), keys.double().T).T
    return torch.nn.functional.cosine_similarity(u_a, u_b, dim=1).tolist()


def prefix_cosines(lm, layer: int, run: dict, keys, sizes: list[int]) -> dict:
    """Median cos(u_n, u_full) for C from the first n tokens of the run's files."""
    from factedit.stats.moment import second_moment

    out = {}
    for n in sorted(s for s in sizes if s < run["n_tokens"]):
        c_n = second_moment(lm, layer, corpus=run["files"], n_tokens=n, use_cache=False)
        values = cosines(c_n, run["C"], keys)
        out[str(n)] = {"median": round(statistics.median(values), 4), "min": round(min(values), 4)}
    return out


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    import torch

    from factedit.models import load_model
    from factedit.spec import load_spec
    from factedit.trace.recommend import resolve_layers

    if args.threads:
        from factedit.threads import choose_threads

        choose_threads(args.threads)  # kept by load_model
    spec = load_spec(args.records, limit=args.limit)
    lm = load_model(args.model, device=args.device)
    layer = resolve_layers(lm, spec.layers, spec.edits)[0][0]
    sizes = [int(s) for s in args.cosines.split(",") if s.strip()]
    keys = subject_keys(lm, spec, layer)
    report: dict = {
        "model": lm.name,
        "identity": lm.identity,
        "layer": layer,
        "records": str(args.records),
        "limit": len(spec.edits),
        "corpora": {},
    }
    runs = {}
    for name, corpus, n in (
        ("text", [str(args.corpus)], args.tokens),
        ("model", ["model"], args.sampled_tokens),
    ):
        run = runs[name] = prepare(lm, layer, corpus, n)
        unedited, edited, seconds = evaluate(lm, spec, run["files"], run["n_tokens"])
        run["seconds"]["eval"] = round(seconds, 1)
        report["unedited"] = unedited
        report["corpora"][name] = {k: v for k, v in run.items() if k != "C"} | {"edited": edited}
        if sizes:
            cos = prefix_cosines(lm, layer, run, keys, sizes)
            report["corpora"][name]["cos_u_prefix_vs_full"] = cos
    between = cosines(runs["text"]["C"], runs["model"]["C"], keys)
    report["cos_u_text_vs_model"] = {
        "median": round(statistics.median(between), 4),
        "min": round(min(between), 4),
    }
    report["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(lm.device),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out is not None:
        from factedit.paths import atomic_write_text

        atomic_write_text(args.out, text + "\n")
    return report


if __name__ == "__main__":
    main()
