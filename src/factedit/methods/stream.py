"""The residual stream of a fixed set of prompts, carried up a layer window one layer at a time.

    stream = PromptStream(lm, prompts, first_layer=2)       # runs layers 0-1 once
    keys = stream.at_subject(lm.arch.down_proj_name(2), module_input=True)   # [n, d_in]
    ... apply layer 2's update ...
    stream.advance(3)                                        # now entering layer 3

MEMIT's layer loop reads the keys at layer l on the model that carries the updates of the
window's layers below l. Recomputing them from the embeddings costs l + 1 layers per window
layer; the layers below the one being read do not change between its reads except for the
update just applied, so the stream keeps the residual entering the current layer
(:func:`factedit.forward.hidden_at`, per chunk of ``rows_per_pass`` right-padded prompts)
and :meth:`advance` runs that layer (or those up to the next window layer), updated, to
move up. Every read resumes there
(:func:`factedit.forward.resume_from_layer`) and stops right after the module it reads.
The values are those of a full forward pass on the same model: the same operations on the
same inputs, in the same chunks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from factedit.batching import pad_right, pad_token_id
from factedit.forward import hidden_at, mark_tuple_output, resume_from_layer
from factedit.hooks import Trace
from factedit.models.loading import LoadedModel
from factedit.tokens import SubjectPrompt


class PromptStream:
    """Per chunk: ids, mask, last-subject index [rows] and the residual entering ``layer``."""

    @torch.no_grad()
    def __init__(
        self,
        lm: LoadedModel,
        prompts: Sequence[SubjectPrompt],
        first_layer: int,
        rows_per_pass: int = 256,
    ) -> None:
        self.lm, self.layer = lm, first_layer
        pad = pad_token_id(lm.tokenizer)
        self.chunks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.hidden: list[torch.Tensor | None] = []
        for start in range(0, len(prompts), rows_per_pass):
            chunk = prompts[start : start + rows_per_pass]
            ids, mask = pad_right([p.input_ids for p in chunk], pad, lm.device)
            last = torch.tensor([p.last_subject_index for p in chunk])
            self.chunks.append((ids, mask, last))
            self.hidden.append(
                hidden_at(lm.arch, first_layer, ids, mask) if first_layer > 0 else None
            )

    @torch.no_grad()
    def at_subject(self, module_name: str, *, module_input: bool) -> torch.Tensor:
        """The input (``module_input``) or output of ``module_name`` (in the current layer or
        above) at each prompt's last subject token -> [n, d] float32 on the input device."""
        out = []
        for (ids, mask, last), hidden in zip(self.chunks, self.hidden, strict=True):
            with (
                resume_from_layer(self.lm.arch, self.layer, hidden),
                Trace(
                    self.lm.model,
                    module_name,
                    retain_input=module_input,
                    retain_output=not module_input,
                    stop=True,
                ) as tr,
            ):
                self.lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
            values = tr.input if module_input else tr.output
            assert values is not None, f"{module_name} did not run"
            rows = torch.arange(len(last), device=values.device)
            out.append(values[rows, last.to(values.device)].float().to(self.lm.device))
        return torch.cat(out)

    @torch.no_grad()
    def advance(self, to_layer: int) -> None:
        """Run the layers from the current one up to ``to_layer`` (as they are now, updates
        applied) and keep the residual entering ``to_layer``."""
        if to_layer <= self.layer:
            raise ValueError(f"the stream is at layer {self.layer}; cannot move to {to_layer}")
        name = self.lm.arch.layer_name(to_layer - 1)
        probe = self.lm.arch.layers()[0].register_forward_hook(mark_tuple_output)
        try:
            for i, ((ids, mask, _), hidden) in enumerate(
                zip(self.chunks, self.hidden, strict=True)
            ):
                with (
                    resume_from_layer(self.lm.arch, self.layer, hidden),
                    Trace(self.lm.model, name, detach=True, stop=True) as tr,
                ):
                    self.lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
                assert tr.output is not None
                self.hidden[i] = tr.output
        finally:
            probe.remove()
        self.layer = to_layer
