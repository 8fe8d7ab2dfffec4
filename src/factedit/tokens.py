"""Tokenisation that the algorithms depend on: subject spans and target token ids.

Subject spans are found in the *tokenised full prompt* through the tokenizer's offset
mapping (never by tokenising pieces separately, which BOS, SentencePiece and byte-level BPE
all break). Targets are tokenised with a leading space and no special tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from transformers import PreTrainedTokenizerBase

from factedit.errors import SubjectNotFoundError


@dataclass(frozen=True)
class SubjectPrompt:
    """A prompt with the subject located in it.

    ``input_ids``: token ids of the full prompt, special tokens (BOS) included, length T.
    ``subject_span``: [start, end) token indices of the subject; ``last_subject_index`` is
    ``end - 1``.
    """

    text: str
    input_ids: tuple[int, ...]
    subject_span: tuple[int, int]

    @property
    def last_subject_index(self) -> int:
        return self.subject_span[1] - 1


def subject_char_span(text: str, subject: str, *, template: str | None = None) -> tuple[int, int]:
    """Character span [start, end) of the subject in ``text``.

    With ``template`` (``text == template.replace("{}", subject, 1)``) the span is where the
    placeholder was, which disambiguates a subject that occurs twice. Without it, the last
    occurrence is used (the one closest to the predicted token).
    """
    if template is not None:
        start = template.index("{}")
    else:
        start = text.rfind(subject)
        if start < 0 or not subject:
            raise SubjectNotFoundError(f'subject "{subject}" does not occur in prompt "{text}"')
    return start, start + len(subject)


def locate_subject(
    tokenizer: PreTrainedTokenizerBase, text: str, subject: str, *, template: str | None = None
) -> SubjectPrompt:
    """Tokenise ``text`` and find the subject's token span through the offset mapping."""
    cs, ce = subject_char_span(text, subject, template=template)
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    inside = [
        i
        for i, (s, e) in enumerate(offsets)
        if e > s and s < ce and e > cs and not _is_special(tokenizer, ids[i])
    ]
    if not inside:
        raise SubjectNotFoundError(
            f'subject "{subject}" could not be mapped to tokens of prompt "{text}"'
        )
    return SubjectPrompt(text=text, input_ids=tuple(ids), subject_span=(inside[0], inside[-1] + 1))


def _is_special(tokenizer: PreTrainedTokenizerBase, token_id: int) -> bool:
    return token_id in set(tokenizer.all_special_ids)


#: Added tokens that mark another modality's input and stand for no text, although their
#: tokenizer does not flag them special (Gemma 3's GGUF and hub tokenizers alike list
#: ``<start_of_image>`` as a user-defined token, and a text-only Gemma 3 can emit it).
MODALITY_MARKERS = re.compile(
    r"<(start|end)_of_(image|audio|video)>|<(image|audio|video)_soft_token>|\[multimodal\]"
)


def control_token_ids(tokenizer: PreTrainedTokenizerBase) -> frozenset[int]:
    """Ids that stand for no text: the named special tokens (BOS, EOS, pad, ...), every
    added token flagged special (Gemma's ``<start_of_turn>``, ``<unused0>``, ...) and the
    modality markers of :data:`MODALITY_MARKERS`.

    ``decode(skip_special_tokens=True)`` skips only the named ones.
    """
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    hidden = {
        i
        for i, token in added.items()
        if getattr(token, "special", False)
        or MODALITY_MARKERS.fullmatch(getattr(token, "content", str(token)))
    }
    return frozenset(tokenizer.all_special_ids) | frozenset(hidden)


def visible_text(tokenizer: PreTrainedTokenizerBase, ids: list[int]) -> str:
    """``ids`` decoded as a person should read them: control tokens left out."""
    control = control_token_ids(tokenizer)
    return tokenizer.decode([i for i in ids if i not in control], skip_special_tokens=True)


def target_token_ids(tokenizer: PreTrainedTokenizerBase, target: str) -> list[int]:
    """Token ids of ``" " + target`` without special tokens (BOS/EOS never inside targets).

    A SentencePiece tokenizer may emit a lone whitespace piece before the word; it is
    dropped so the target starts with the word's own (space-prefixed) token.
    """
    target = target.strip()
    if not target:
        raise ValueError("empty target")
    ids = tokenizer(" " + target, add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids)
    ids = [i for i in ids if i not in special]
    while len(ids) > 1 and tokenizer.decode([ids[0]]).strip() == "":
        ids = ids[1:]
    return ids


def prompt_token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Token ids of a prompt, with the tokenizer's special prefix (BOS) if it adds one."""
    return list(tokenizer(text, add_special_tokens=True)["input_ids"])
