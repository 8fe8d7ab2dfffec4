"""MEMIT at scale on one GPU, against the arithmetic limit measured in the same run.

Random weights of real shapes (GPT-2 XL, GPT-J 6B, Llama-3 8B; speed depends on shapes, not
values), bf16 model, float32 z optimisation and float64 solves, on the GPU. For each shape:

- the statistics C of the window's layers (one pass): tokens/s;
- MEMIT at each of ``--facts`` (100, 1,000, 10,000) synthetic facts: z optimisation (batched
  over ``--z-batch`` facts per forward pass, ``--z-steps`` Adam steps) and the per-layer keys
  and solves, seconds per fact;
- ROME, seconds per edit (median of ``--rome-edits``);
- the arithmetic limit of each phase: its floating-point operations (counted by
  ``torch.utils.flop_counter.FlopCounterMode`` on one step of the same work) divided by the
  device's measured bf16 matmul throughput (an 8192³ GEMM), and the ratio measured / limit.

    python scripts/gpu_memit.py --out docs/bench/gpu-memit-h200.json     # on a CUDA machine
    python scripts/gpu_memit.py --tiny --facts 8,16                      # CPU smoke test

Without CUDA and without ``--tiny`` it prints ``{"skipped": "..."}`` and exits 0.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from factedit.methods import memit, spread
from factedit.session import EditSession
from factedit.spec import EditRequest
from factedit.stats import moments_and_counts
from factedit.testing import byte_bpe_tokenizer
from gpu_check import SHAPES, TEXT, build, timed
from json_out import emit

#: MEMIT windows of the reference hparams (GPT-2 XL 13-17, GPT-J 3-8, Llama-3-8B 4-8)
WINDOWS = {"gpt2-xl": range(13, 18), "gpt-j-6b": range(3, 9), "llama-3-8b": range(4, 9)}
WORDS = ("amber", "basil", "cobalt", "delta", "ember", "fjord", "granite", "harbor", "indigo")


def facts(n: int) -> list[EditRequest]:
    """``n`` distinct synthetic facts (subjects made of three words and a number)."""
    out = []
    for i in range(n):
        a, b, c = (WORDS[(i // 9**j) % 9] for j in range(3))
        subject = f"{a.title()} {b} {c} {i}"
        out.append(EditRequest(subject=subject, prompt="{} is located in", target_new="Rome"))
    return out


def matmul_tflops(device: str, dtype: torch.dtype, size: int) -> float:
    """Measured dense matmul throughput (TFLOP/s, median of 5) at ``size``³."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    times = [timed(lambda: a @ b, device) for _ in range(5)]
    return 2 * size**3 / statistics.median(times) / 1e12


def counted_flops(fn) -> int:
    """Floating-point operations of ``fn()`` (matmuls and convolutions, as torch counts)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def run_shape(name: str, args, tokenizer, corpus: Path, tflops: float) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    lm = build(name, tokenizer, device, dtype, args.tiny)
    window = [i for i in WINDOWS[name] if i < lm.arch.num_layers] or [1, 2]
    hp = {"v_num_grad_steps": args.z_steps, "z_batch_facts": args.z_batch, "loss_stop": 0.0}
    hp["mom2_n_tokens"] = args.stat_tokens
    result: dict = {"model": name, "layers": window, "device": device, "dtype": str(dtype)}
    seconds = timed(
        lambda: moments_and_counts(lm, window, corpus=[corpus], n_tokens=args.stat_tokens,
                                   show_progress=False, use_cache=False),
        device,
    )  # fmt: skip
    result["stats_tokens_per_s"] = args.stat_tokens / seconds
    session = EditSession(  # random weights: the size guard means nothing here
        lm, method="memit", layers=window, corpus=[corpus], hparams=hp, allow_large_updates=True
    )
    one = facts(args.z_batch)
    # one Adam step = (2 steps) - (1 step: the forward pass that only measures)
    z_step = counted_flops(lambda: _z(lm, session, one, 2)) - counted_flops(
        lambda: _z(lm, session, one, 1)
    )
    result["z_step_flops_per_fact"] = z_step / args.z_batch
    result["memit"] = []
    for n in args.facts:
        z_time = _ZTimer(device)
        total = timed(lambda r=facts(n), z=z_time: z.run(session.compute, r), device)
        limit = z_step * args.z_steps * n / args.z_batch / (tflops * 1e12)
        result["memit"].append(
            {
                "facts": n,
                "seconds_per_fact": total / n,
                "z_seconds_per_fact": z_time.seconds / n,
                "keys_and_solve_seconds": total - z_time.seconds,
                "z_arithmetic_limit_s": limit,
                "z_ratio_to_limit": z_time.seconds / limit if limit else None,
            }
        )
        print(json.dumps({name: result["memit"][-1]}), flush=True)
    rome_hp = {"v_num_grad_steps": 20, "mom2_n_tokens": args.stat_tokens}
    rome = EditSession(
        lm, method="rome", layers=[window[-1]], corpus=[corpus], hparams=rome_hp,
        allow_large_updates=True,
    )  # fmt: skip
    edits = [timed(lambda r=r: rome.compute([r]), device) for r in facts(args.rome_edits)]
    result["rome_seconds_per_edit"] = statistics.median(edits)
    if device == "cuda":
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    return result


def _z(lm, session: EditSession, requests, steps: int):
    """The z optimisation of ``requests`` alone (no cache), ``steps`` Adam steps."""
    hp = dataclasses.replace(session.hparams, v_num_grad_steps=steps)
    templates = session.state.templates(lm)
    return spread.compute_targets(lm, requests, session.layers[-1], templates, hp, use_cache=False)


class _ZTimer:
    """Runs a MEMIT computation and times its z phase (``memit.compute_targets``)."""

    def __init__(self, device: str) -> None:
        self.device, self.seconds = device, 0.0

    def run(self, fn, *args):
        real = memit.compute_targets

        def timed_targets(*a, **kw):
            out = []
            self.seconds += timed(lambda: out.append(real(*a, **kw)), self.device)
            return out[0]

        memit.compute_targets = timed_targets
        try:
            return fn(*args)
        finally:
            memit.compute_targets = real


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SHAPES))
    parser.add_argument("--facts", default="100,1000,10000")
    parser.add_argument("--z-steps", type=int, default=25)
    parser.add_argument("--z-batch", type=int, default=256)
    parser.add_argument("--stat-tokens", type=int, default=100_000)
    parser.add_argument("--rome-edits", type=int, default=3)
    parser.add_argument("--tiny", action="store_true", help="small configs (CPU smoke test)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    args.facts = [int(n) for n in args.facts.split(",")]
    if not torch.cuda.is_available() and not args.tiny:
        report = {"skipped": "no CUDA device: run on a GPU machine (or --tiny on the CPU)"}
        print(json.dumps(report))
        return report
    if args.tiny:
        args.z_batch, args.stat_tokens = min(args.z_batch, 4), min(args.stat_tokens, 2000)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    tflops = matmul_tflops(device, dtype, 1024 if args.tiny else 8192)
    report: dict = {
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "matmul_tflops": tflops,
        "z_steps": args.z_steps,
        "z_batch_facts": args.z_batch,
        "results": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FACTEDIT_HOME"] = str(Path(tmp) / "home")  # z cache and C: this run's
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text(TEXT * (1 if args.tiny else 4))
        tokenizer = byte_bpe_tokenizer()
        for name in args.models.split(","):
            report["results"].append(run_shape(name, args, tokenizer, corpus, tflops))
    return emit(report, args.out)


if __name__ == "__main__":
    main()
