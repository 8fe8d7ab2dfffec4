"""Fluency and consistency of generated text: n-gram entropy (GE) and target mentions.

GE follows the ROME reference (``compute_n_gram_entropy`` in kmeng01/rome
``experiments/py/eval_utils_counterfact.py``): for one text, ``Hn`` is the base-2 entropy of
the frequency distribution of its word n-grams and the text scores
``(2/3 * H2 + 4/3 * H3) / 2``; GE is the mean over texts, x 100.

Differences from the reference, on purpose:

- words come from a regular expression (``\\w+`` runs, or single punctuation characters)
  instead of nltk's Treebank tokenizer, so there is no nltk dependency. The two agree on
  plain words and punctuation; they differ on contractions ("don't" is ``don ' t`` here,
  ``do n't`` in nltk), which changes GE by a fraction of a point;
- consistency: the reference RS is the TF-IDF cosine between the generations and Wikipedia
  snippets about target_new, which we do not have. Instead we report how often a
  generation mentions target_new and how often it mentions target_true (whole-word,
  case-insensitive), see :func:`mentions`.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence

_WORD = re.compile(r"\w+|[^\w\s]")
NGRAM_ORDERS: tuple[int, ...] = (2, 3)
NGRAM_WEIGHTS: tuple[float, ...] = (2 / 3, 4 / 3)


def normalise(text: str) -> str:
    """The reference's clean-up of generated text: NFKD, blank lines become spaces."""
    return unicodedata.normalize("NFKD", text).replace("\n\n", " ")


def words(text: str) -> list[str]:
    """Word tokens for n-gram statistics: runs of word characters, or one punctuation mark."""
    return _WORD.findall(text)


def ngram_entropy(tokens: Sequence[str], n: int) -> float:
    """Base-2 entropy of the frequency distribution of the ``n``-grams of ``tokens``.

    0 when there are fewer than ``n`` tokens (no n-grams), as in the reference.
    """
    counts = Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))
    total = sum(counts.values())
    return -sum(c / total * math.log2(c / total) for c in counts.values()) if total else 0.0


def text_entropy(text: str) -> float:
    """``(2/3 * H2 + 4/3 * H3) / 2`` of one text (not scaled)."""
    tokens = words(normalise(text))
    parts = [w * ngram_entropy(tokens, n) for n, w in zip(NGRAM_ORDERS, NGRAM_WEIGHTS, strict=True)]
    return sum(parts) / len(parts)


def generation_entropy(texts: Sequence[str]) -> float:
    """GE of a set of texts: the mean of :func:`text_entropy`, x 100."""
    if not texts:
        raise ValueError("GE needs at least one text")
    return 100.0 * sum(text_entropy(t) for t in texts) / len(texts)


def mentions(text: str, target: str) -> bool:
    """Whether ``target`` occurs in ``text`` as whole words (case-insensitive, both NFKD)."""
    needle = normalise(target).strip().casefold()
    if not needle:
        return False
    pattern = r"(?<!\w)" + re.escape(needle) + r"(?!\w)"
    return re.search(pattern, normalise(text).casefold()) is not None
