"""The packaged synthetic corpus: deterministic, WikiText-2 layout, covers the test tokens."""

from __future__ import annotations

import hashlib
import string

from factedit.stats.corpus import iter_documents, token_sequences
from factedit.testing.corpus import synthetic_articles, synthetic_text, training_lines

#: sha256 of "\n".join(training_lines()). Every tiny-tokenizer expectation in the suite (token
#: splits in the trace tests, probe entropies) follows from this text: when it changes on
#: purpose, re-derive those and update this digest (print it with the expression above).
TRAINING_SHA256 = "113d0f0b0318d04a604818f9b2b18a6cd55fb88d88431b781986ac1d9944fed8"


def test_the_text_is_deterministic_and_seeded():
    assert synthetic_text(5) == synthetic_text(5)
    assert synthetic_text(5, seed=1) != synthetic_text(5)
    assert synthetic_articles(3) == synthetic_articles(5)[:3]
    digest = hashlib.sha256("\n".join(training_lines()).encode()).hexdigest()
    assert digest == TRAINING_SHA256


def test_articles_are_laid_out_like_raw_wikitext(tmp_path):
    articles = synthetic_articles(20, seed=2)
    for text in articles:
        lines = text.splitlines()
        assert lines[0].startswith(" = ") and lines[0].endswith(" = ") and lines[1] == ""
        assert any(line.startswith(" = = ") for line in lines)  # a section heading
    path = tmp_path / "corpus.txt"
    path.write_text("".join(articles), encoding="utf-8")
    docs = list(iter_documents([path]))
    # the reader splits at blank lines and headings: each heading is a document of its own
    titles = [d for d in docs if d.startswith("= ") and not d.startswith("= = ")]
    assert titles == [text.splitlines()[0].strip() for text in articles]
    paragraphs = [d for d in docs if not d.startswith("= ")]
    assert len(paragraphs) > len(articles) and all(d.endswith(".") for d in paragraphs)


def test_tokenizers_know_every_test_character_and_the_common_words(bpe_tokenizer, sp_tokenizer):
    printable = "".join(c for c in string.printable if not c.isspace())
    ids = sp_tokenizer(printable + " Gdańsk Zürich Brasília")["input_ids"]
    assert sp_tokenizer.unk_token_id not in ids
    for word in (" Paris", " Rome", " Tower", " basketball", " weather", " located"):
        assert len(bpe_tokenizer(word)["input_ids"]) == 1, word
    assert len(bpe_tokenizer("The")["input_ids"]) == 1  # line-initial words are learnt too


def test_the_corpus_fixture_holds_enough_tokens(corpus_path, bpe_tokenizer, sp_tokenizer):
    # 20,000 token vectors: ten times the 2,000 the statistics and ROME tests collect
    for tok in (bpe_tokenizer, sp_tokenizer):
        assert token_sequences(tok, [corpus_path], 20_000, 64).shape == (313, 64)
