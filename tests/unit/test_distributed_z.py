"""MEMIT's z optimisation sharded over 2 gloo processes gives the one-process deltas."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import torch

from factedit.session import EditSession
from factedit.stats import clear_memo
from factedit.testing import tiny_model
from proc_helpers import run_ranks, worker_env

HPARAMS = {"mom2_n_tokens": 1_500, "v_num_grad_steps": 8}

WORKER = textwrap.dedent(
    """
    import sys
    import torch
    import torch.distributed as dist
    from transformers import PreTrainedTokenizerFast
    import factedit.methods.spread as spread
    from factedit.session import EditSession
    from factedit.testing import tiny_model
    from test_memit import FACTS

    optimised = []
    real = spread.optimise_values

    def counted(lm, batch, *args, **kwargs):
        optimised.append(batch.n_facts)
        return real(lm, batch, *args, **kwargs)

    spread.optimise_values = counted

    rank, rendezvous, tok_dir, corpus, out = sys.argv[1:6]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method="file://" + rendezvous, rank=int(rank),
                            world_size=2)
    lm = tiny_model("llama", PreTrainedTokenizerFast.from_pretrained(tok_dir))
    session = EditSession(lm, method="memit", layers=[1, 2], corpus=[corpus],
                          hparams={hparams!r}, seed=0)
    deltas = session.compute(FACTS)
    torch.save({{d.param: d.dense() for d in deltas}}, out)
    print(sum(optimised))
    """
).format(hparams=HPARAMS)


def test_two_gloo_processes_share_the_z_facts_and_give_the_one_process_deltas(
    tmp_path, bpe_tokenizer, corpus_path, monkeypatch
):
    home = tmp_path / "home"
    script, tok_dir = tmp_path / "rank.py", tmp_path / "tokenizer"
    script.write_text(WORKER)
    bpe_tokenizer.save_pretrained(tok_dir)
    env = worker_env(home, Path(__file__).parent)
    outs = [tmp_path / f"deltas-{rank}.pt" for rank in range(2)]
    argv = [
        [str(rank), str(tmp_path / "rendezvous"), str(tok_dir), str(corpus_path), str(outs[rank])]
        for rank in range(2)
    ]
    optimised = []
    for code, stdout, stderr in run_ranks(script, argv, env=env):
        assert code == 0, stderr[-3000:]
        optimised.append(int(stdout.split()[-1]))
    assert optimised == [2, 1]  # facts 0 and 2 on rank 0, fact 1 on rank 1
    assert len(list((home / "z").glob("*.safetensors"))) == 3  # each wrote its own z

    from test_memit import FACTS

    monkeypatch.setenv("FACTEDIT_HOME", str(tmp_path / "alone"))
    clear_memo()
    torch.set_num_threads(1)
    lm = tiny_model("llama", bpe_tokenizer)
    session = EditSession(
        lm, method="memit", layers=[1, 2], corpus=[corpus_path], hparams=HPARAMS, seed=0
    )
    alone = {d.param: d.dense() for d in session.compute(FACTS)}
    clear_memo()
    ranks = [torch.load(out) for out in outs]
    assert set(ranks[0]) == set(alone) == {f"model.layers.{i}.mlp.down_proj.weight" for i in (1, 2)}
    for name, delta in alone.items():
        assert float(delta.norm()) > 0
        torch.testing.assert_close(ranks[0][name], ranks[1][name], rtol=0, atol=0)
        torch.testing.assert_close(ranks[0][name], delta, rtol=1e-4, atol=1e-6)


def test_torchrun_edit_apply_shares_the_work_and_rank_0_alone_reports(tmp_path, tiny, corpus_path):
    import json

    import yaml
    from test_memit import FACTS
    from test_stats_distributed import _free_port

    model_dir = tmp_path / "tiny-llama"
    lm = tiny("llama")
    lm.model.save_pretrained(model_dir)
    lm.tokenizer.save_pretrained(model_dir)
    spec = tmp_path / "facts.yaml"
    edits = [{**f.to_dict(), "target_true": "Paris"} for f in FACTS]
    spec.write_text(
        yaml.safe_dump({"method": "memit", "layers": [1, 2], "hparams": HPARAMS, "edits": edits})
    )
    env = worker_env(tmp_path / "home", FACTEDIT_QUIET="0", OMP_NUM_THREADS="1", COLUMNS="200")
    report = tmp_path / "report.json"
    command = [
        *(sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"),
        *("--master-port", str(_free_port()), "-m", "factedit", "edit", "apply", str(spec)),
        *("--model", str(model_dir), "--corpus", str(corpus_path), "--json", str(report)),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("verdict") == 1 and done.stdout.count("wrote") == 1
    records = json.loads(report.read_text())["edits"]
    assert len(records) == 3
