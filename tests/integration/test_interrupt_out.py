"""A real Ctrl-C (SIGINT) or SIGTERM during ``edit apply --out`` exits 130 and leaves nothing.

The CLI runs in a subprocess on a tiny model saved as a Hugging Face directory. A wrapper
makes the final write (``save_pretrained``) slow and says when it has started; the test then
sends the signal. In the ``swallow`` case the writer catches the KeyboardInterrupt and carries
on, as a library might: the interrupt must still win.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

WRAPPER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import transformers

    marker, mode = Path(sys.argv[1]), sys.argv[2]
    real_save = transformers.PreTrainedModel.save_pretrained

    def slow_save(self, *args, **kwargs):
        marker.write_text("writing")
        try:
            time.sleep(60)
        except KeyboardInterrupt:
            if mode != "swallow":
                raise
        return real_save(self, *args, **kwargs)

    transformers.PreTrainedModel.save_pretrained = slow_save
    from factedit.cli.main import app

    sys.argv = ["factedit", *sys.argv[3:]]
    app()
    """
)

SPEC = """\
hparams: {mom2_n_tokens: 2000, v_num_grad_steps: 5, context_templates_per_length: 2}
edits:
  - subject: Eiffel Tower
    prompt: "The {} is located in the city of"
    target_new: Rome
    target_true: Paris
"""


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, bpe_tokenizer) -> Path:
    from factedit.testing import tiny_model

    lm = tiny_model("llama", bpe_tokenizer)
    path = tmp_path_factory.mktemp("tiny-llama")
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    return path


@pytest.mark.parametrize(
    ("sig", "mode"),
    [(signal.SIGINT, "raise"), (signal.SIGINT, "swallow"), (signal.SIGTERM, "raise")],
    ids=["sigint", "sigint-swallowed-by-the-writer", "sigterm"],
)
def test_signal_during_the_final_write_exits_130_and_leaves_nothing(
    tmp_path, model_dir, corpus_path, sig, mode
):
    spec, marker, out = tmp_path / "spec.yaml", tmp_path / "writing", tmp_path / "edited"
    spec.write_text(SPEC)
    args = ["edit", "apply", str(spec), "--model", str(model_dir), "--layers", "1"]
    args += ["--corpus", str(corpus_path), "--out", str(out), "--device", "cpu"]
    env = {**os.environ, "FACTEDIT_HOME": str(tmp_path / "home"), "FACTEDIT_QUIET": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAPPER, str(marker), mode, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), proc.communicate()[0] if proc.poll() is not None else "timeout"
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, output
    assert "interrupted" in output
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "spec.yaml", "writing"]
