"""GPU speed and correctness check for ROME on real model shapes with random weights.

Builds GPT-2 XL, GPT-J 6B and Llama-3 8B shaped models (random weights: speed depends on
shapes, not values) in bf16 on one GPU and measures one v*-optimisation step of ROME with
factedit's engine (lower layers skipped, logits only where needed) against the plain full
forward pass, in the same run. Also checks the algebra on the GPU: ΔW rank one,
W'k* ≈ v*, revert bit-exact, fast v* == plain v*. JSON to stdout and to --out.

    python scripts/gpu_check.py --out gpu.json            # on a CUDA machine
    python scripts/gpu_check.py --tiny                    # CPU smoke test of the script
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from factedit.delta import apply_deltas
from factedit.methods.hparams import RomeHParams
from factedit.methods.rank_one import compute_key, rank_one_delta
from factedit.methods.value import HookSite, optimise_value
from factedit.models.arch import resolve_architecture
from factedit.models.loading import LoadedModel
from factedit.spec import EditRequest
from factedit.stats import second_moment
from factedit.testing import byte_bpe_tokenizer, tiny_config

SHAPES = {
    "gpt2-xl": ("gpt2", dict(n_embd=1600, n_layer=48, n_head=25, n_positions=1024), 17),
    "gpt-j-6b": (
        "gptj",
        dict(n_embd=4096, n_layer=28, n_head=16, rotary_dim=64, n_positions=2048),
        5,
    ),
    "llama-3-8b": (
        "llama",
        dict(
            hidden_size=4096,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            intermediate_size=14336,
            max_position_embeddings=8192,
            rope_theta=500000.0,
        ),
        5,
    ),
}
VOCAB = {"gpt2-xl": 50257, "gpt-j-6b": 50400, "llama-3-8b": 128256}
REQUEST = EditRequest(
    subject="Eiffel Tower", prompt="The {} is located in the city of", target_new="Rome"
)
TEXT = (
    "The Eiffel Tower is located in the city of Paris. Michael Jordan plays basketball. "
    "The iPhone is made by Apple. Rome is the capital of Italy. The river flows north. "
) * 400


def build(name: str, tokenizer, device: str, dtype: torch.dtype, tiny: bool) -> LoadedModel:
    model_type, kw, _ = SHAPES[name]
    if tiny:
        config = tiny_config(model_type, VOCAB[name], layers=8)
    else:
        config = AutoConfig.for_model(model_type, vocab_size=VOCAB[name], **kw)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.eval().requires_grad_(False)
    return LoadedModel(model, tokenizer, resolve_architecture(model), name, f"random:{name}")


def timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def check(name: str, args, tokenizer, corpus: Path) -> dict:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    lm = build(name, tokenizer, device, dtype, args.tiny)
    layer = min(SHAPES[name][2], lm.arch.num_layers // 2)
    # loss_stop 0: every run takes all --steps steps (the total loss never reaches 0)
    hp = RomeHParams(v_num_grad_steps=args.steps, loss_stop=0.0, context_templates_per_length=10)
    site = HookSite.down_proj(lm, layer)
    templates = ["{}"] + [f"Sample context number {i} here. {{}}" for i in range(20)]
    result: dict = {
        "model": name,
        "device": device,
        "dtype": str(dtype),
        "layer": layer,
        "params": sum(p.numel() for p in lm.model.parameters()),
    }
    runs: dict[str, list[float]] = {"fast": [], "plain": []}
    values = {}
    for _ in range(args.repeats):
        for mode in ("fast", "plain"):

            def run(mode=mode, lm=lm):
                values[mode] = optimise_value(
                    lm, REQUEST, site, templates, hp, prefix=mode == "fast"
                ).v_star

            runs[mode].append(timed(run, device) / args.steps)
    result["step_ms"] = {m: 1000 * statistics.median(v) for m, v in runs.items()}
    result["speedup"] = result["step_ms"]["plain"] / result["step_ms"]["fast"]
    v_fast, v_plain = values["fast"], values["plain"]
    result["v_rel_diff_fast_vs_plain"] = float((v_fast - v_plain).norm() / v_plain.norm())
    print(json.dumps({"timing": result}), flush=True)

    C = second_moment(
        lm, layer, corpus=[corpus], n_tokens=args.stat_tokens, show_progress=False
    ).to(device)
    k = compute_key(lm, REQUEST, layer, templates)
    delta, norms = rank_one_delta(lm, layer, C, k, v_fast)
    weight = lm.arch.down_proj_weight(layer)
    original = weight.detach().clone()
    singular = torch.linalg.svdvals(delta.dense().double())
    result["rank_one_ratio"] = float(singular[1] / singular[0])
    with apply_deltas(lm.model, [delta]):
        out = lm.arch.down_proj(layer)(k.to(dtype)[None]).float()[0]
        result["Wk_vs_v_rel_err"] = float((out - v_fast).norm() / v_fast.norm())
    result["revert_bit_exact"] = bool(torch.equal(weight, original))
    result["relative_norm"] = norms["relative_norm"]
    if device == "cuda":
        result["peak_mem_gb"] = torch.cuda.max_memory_allocated() / 2**30
    del lm, C
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SHAPES))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--stat-tokens", type=int, default=4096)
    parser.add_argument("--tiny", action="store_true", help="small configs (CPU smoke test)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        corpus.write_text(TEXT)
        tokenizer = byte_bpe_tokenizer()
        report = {
            "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "results": [],
        }
        for name in args.models.split(","):
            try:
                report["results"].append(check(name, args, tokenizer, corpus))
            except Exception as exc:  # report and go on with the next shape
                report["results"].append({"model": name, "error": repr(exc)})
            print(json.dumps(report["results"][-1]), flush=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
