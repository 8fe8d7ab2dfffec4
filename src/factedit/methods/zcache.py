"""Optimised z vectors on disk, so a long MEMIT batch that is interrupted resumes.

    cache = ZCache(lm, site, templates, hp)
    hit = cache.get(request)          # ValueResult or None
    cache.put(request, value)         # atomic safetensors file

A z depends on the model *as it is* (its identity names the applied deltas, so a sequential
stream's later batches never read an earlier model's z), the hook site, the context
templates, every hyper-parameter of the value optimisation and the request's subject, prompt
and target_new (text and token ids); the file name is a digest of all of them. The reference
MEMIT keeps the same per-fact cache (``cache_template``). Files live in
``$FACTEDIT_HOME/z/``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from factedit.methods.hparams import ValueHParams
from factedit.methods.value import HookSite, ValueResult
from factedit.models.loading import LoadedModel
from factedit.paths import atomic_file, cache_dir
from factedit.spec import EditRequest
from factedit.tokens import prompt_token_ids, target_token_ids

#: Part of every key: bump it whenever the value optimisation changes what z it finds.
FORMAT_VERSION = 1
#: The fields of the value optimisation that change z (C and the layer window do not).
_Z_FIELDS = (
    "v_num_grad_steps",
    "v_lr",
    "v_weight_decay",
    "clamp_norm_factor",
    "kl_factor",
    "loss_stop",
)


class ZCache:
    """Per-fact z files for one model state, site, template set and hyper-parameters."""

    def __init__(
        self, lm: LoadedModel, site: HookSite, templates: Sequence[str], hp: ValueHParams
    ) -> None:
        self.base = {
            "version": FORMAT_VERSION,
            "model": lm.identity,
            "site": site.name,
            "templates": list(templates),
            "hparams": {name: getattr(hp, name) for name in _Z_FIELDS},
        }
        self.directory = cache_dir("z")
        self.tokenizer = lm.tokenizer
        self.device = lm.device

    def _path(self, request: EditRequest) -> Path:
        key = {
            **self.base,
            "subject": request.subject,
            "prompt": request.prompt,
            "target_new": request.target_new,
            # the token ids too: the same weights under another tokenizer are another problem
            "tokens": prompt_token_ids(self.tokenizer, request.rewrite_prompt),
            "target_tokens": target_token_ids(self.tokenizer, request.target_new),
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]
        return self.directory / f"{digest}.safetensors"

    def get(self, request: EditRequest) -> ValueResult | None:
        """The cached z of ``request`` on the model's device (None when absent or
        unreadable)."""
        path = self._path(request)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as fh:
                log = json.loads((fh.metadata() or {})["log"])
                z, z_orig = (fh.get_tensor(k).to(self.device) for k in ("v_star", "v_orig"))
                return ValueResult(z, z_orig, log)
        except (SafetensorError, KeyError, OSError, ValueError):
            return None

    def put(self, request: EditRequest, value: ValueResult) -> None:
        tensors = {
            "v_star": value.v_star.detach().float().contiguous().cpu(),
            "v_orig": value.v_orig.detach().float().contiguous().cpu(),
        }
        meta: dict[str, Any] = {"log": json.dumps(value.log)}
        with atomic_file(self._path(request)) as fh:
            fh.write(save(tensors, metadata=meta))
