"""A synthetic, English-like corpus that ships with the package, for tests (no data needed).

``synthetic_articles(n)`` writes ``n`` short encyclopedia-style articles about landmarks,
countries, people and companies ("The Eiffel Tower is located in the city of Paris."), mixed
with everyday sentences built from word lists (numbers, years, punctuation, a few accented
names). The text is laid out like the raw WikiText-2 files: a `` = Title = `` line opens each
article, `` = = Section = = `` lines open its sections, paragraphs are separated by blank
lines. Everything is drawn from one seeded ``random.Random``, so the text is the same on every
machine and Python version.

``training_lines()`` is the text the tiny test tokenizers of :mod:`factedit.testing` are
trained on; ``write_corpus(path)`` writes the same kind of text as a corpus file for
second-moment statistics.
"""

from __future__ import annotations

import functools
import random
import string
from pathlib import Path

from factedit.testing.words import (
    ADJECTIVES,
    ANIMALS,
    ATHLETES,
    COMPANIES,
    COUNTRIES,
    DAYS,
    FIGURES,
    FILLERS,
    FOODS,
    LANDMARKS,
    MONTHS,
    NOUNS,
    ORDINALS,
    SEASONS,
    SECTIONS,
    VERBS_ING,
    VERBS_PAST,
)

#: Articles in the tokenizer training text (about 295,000 characters, 54,000 words).
TRAINING_ARTICLES = 250


def _cap(text: str) -> str:
    """``text`` with its first letter upper-cased (a sentence may start with "the ...")."""
    return text[:1].upper() + text[1:]


def _a(word: str) -> str:
    """``word`` with its indefinite article: "an English", "a German"."""
    return f"an {word}" if word[:1] in "AEIOUaeiou" else f"a {word}"


def _plural(noun: str) -> str:
    if noun.endswith(("s", "sh", "ch")):
        return noun + "es"
    if noun.endswith("y") and noun[-2:-1] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _slots(rng: random.Random) -> dict[str, str]:
    """Random fillers for every slot a :data:`FILLERS` template may use."""
    pick = rng.choice
    nouns = rng.sample(NOUNS, 3)
    country = pick(COUNTRIES)
    return {
        "adj": pick(ADJECTIVES),
        "adj2": pick(ADJECTIVES),
        "adj3": pick(ADJECTIVES),
        "noun": nouns[0],
        "noun2": nouns[1],
        "noun3": nouns[2],
        "plural": _plural(pick(NOUNS)),
        "plural2": _plural(pick(NOUNS)),
        "past": pick(VERBS_PAST),
        "past2": pick(VERBS_PAST),
        "ing": pick(VERBS_ING),
        "ing2": pick(VERBS_ING),
        "animal": pick(ANIMALS),
        "animal2": pick(ANIMALS),
        "food": pick(FOODS),
        "food2": pick(FOODS),
        "month": pick(MONTHS),
        "day": pick(DAYS),
        "season": pick(SEASONS),
        "ordinal": pick(ORDINALS),
        "city": country[1],
        "country": country[0],
        "year": str(rng.randint(1500, 2024)),
        "year2": str(rng.randint(1500, 2024)),
        "count": f"{rng.randint(100, 99_999):,}",
        "count2": f"{rng.randint(100, 99_999):,}",
        "small": str(rng.randint(2, 60)),
        "digit": str(rng.randint(0, 9)),
        "hour": str(rng.randint(1, 12)),
        "date": str(rng.randint(1, 28)),
        "pct": str(rng.randint(1, 99)),
    }


def filler(rng: random.Random) -> str:
    """One everyday sentence from :data:`FILLERS`."""
    return rng.choice(FILLERS).format(**_slots(rng))


def _landmark(rng: random.Random, entry: tuple[str, ...]) -> tuple[str, list[str]]:
    name, city, country = entry
    year = rng.randint(1100, 1990)
    facts = [
        f"{_cap(name)} is located in the city of {city}.",
        f"{_cap(name)} is in {city}, {country}.",
        f"{_cap(name)} stands in the city of {city}.",
        f"The best-known sight of {city} is {name}.",
        f"Work on {name} began in {year} and ended in {year + rng.randint(2, 40)}.",
        f"Every year, about {rng.randint(1, 9)}.{rng.randint(0, 9)} million people visit {name}.",
        f"{city} is a city in {country}.",
    ]
    return _cap(name), facts


def _country(rng: random.Random, entry: tuple[str, ...]) -> tuple[str, list[str]]:
    country, capital, continent, language = entry
    facts = [
        f"{capital} is the capital of {country}.",
        f"The capital of {country} is {capital}.",
        f"{_cap(country)} is a country in {continent}.",
        f"The official language of {country} is {language}.",
        f"People in {capital} speak {language}.",
        f"{_cap(country)} has a population of about {rng.randint(2, 140)} million.",
    ]
    return _cap(country), facts


def _athlete(rng: random.Random, entry: tuple[str, ...]) -> tuple[str, list[str]]:
    name, sport, team, nationality = entry
    facts = [
        f"{name} plays the sport of {sport}.",
        f"{name} is a professional {sport} player.",
        f"{name} is {_a(nationality)} athlete.",
        f"{name} played for {team} for {rng.randint(2, 15)} seasons.",
        f"In {rng.randint(1990, 2023)}, {name} won the title with {team}.",
        f"{name} is known for {sport}.",
    ]
    return name, facts


def _figure(rng: random.Random, entry: tuple[str, ...]) -> tuple[str, list[str]]:
    name, job, work, nationality = entry
    born = rng.randint(1450, 1900)
    facts = [
        f"{name} was {_a(nationality)} {job}.",
        f"{name} is best known for {work}.",
        f"{name} was born in {born} and died in {born + rng.randint(30, 90)}.",
        f"The {job} {name} worked for many years on {work}.",
        f'Critics called the work of {name} "{rng.choice(ADJECTIVES)}".',
    ]
    return name, facts


def _company(rng: random.Random, entry: tuple[str, ...]) -> tuple[str, list[str]]:
    company, product, founder, city = entry
    facts = [
        f"{_cap(product)} is made by {company}.",
        f"{company} was founded by {founder}.",
        f"{company} is based in {city}.",
        f"The headquarters of {company} are in {city}.",
        f"In {rng.randint(1950, 2023)}, {company} sold {rng.randint(2, 90)} million units of "
        f"{product}.",
        f"{founder} started {company} in {rng.randint(1880, 2010)}.",
    ]
    return company, facts


#: Every article topic: (facts function, table row); articles cycle through all of them.
_TOPICS = tuple(
    (facts, entry)
    for facts, table in (
        (_landmark, LANDMARKS),
        (_country, COUNTRIES),
        (_athlete, ATHLETES),
        (_figure, FIGURES),
        (_company, COMPANIES),
    )
    for entry in table
)


def _topic_facts(rng: random.Random, index: int) -> tuple[str, list[str]]:
    """Title and fact sentences of topic ``index`` (modulo the number of topics)."""
    facts, entry = _TOPICS[index % len(_TOPICS)]
    return facts(rng, entry)


def article(rng: random.Random, index: int) -> str:
    """Article about topic ``index``: a title line, two or three sections of paragraphs that
    mix facts about the topic, a fact about some other topic and everyday sentences, in raw
    WikiText-2 layout."""
    title, facts = _topic_facts(rng, index)
    lines = [f" = {title} = ", ""]
    for number, section in enumerate(rng.sample(SECTIONS, rng.randint(2, 3))):
        if number:
            lines += [f" = = {section} = = ", ""]
        for _ in range(rng.randint(1, 2)):
            sentences = rng.sample(facts, rng.randint(2, 4))
            sentences.append(rng.choice(_topic_facts(rng, rng.randrange(len(_TOPICS)))[1]))
            sentences += [filler(rng) for _ in range(rng.randint(1, 3))]
            rng.shuffle(sentences)
            lines += [" " + " ".join(sentences), ""]
    return "\n".join(lines) + "\n"


def synthetic_articles(n: int, seed: int = 0) -> list[str]:
    """``n`` articles (see :func:`article`), the same for the same ``n`` and ``seed``: every
    topic in turn, in an order shuffled by ``seed``."""
    rng = random.Random(seed)
    order = list(range(len(_TOPICS)))
    rng.shuffle(order)
    return [article(rng, order[i % len(order)]) for i in range(n)]


def synthetic_text(n: int, seed: int = 0) -> str:
    """``n`` articles joined into one raw WikiText-2 style text."""
    return "".join(synthetic_articles(n, seed))


@functools.cache
def training_lines() -> tuple[str, ...]:
    """The text the tiny test tokenizers are trained on, one stripped non-empty line per item
    (so a line-initial "The" is learnt as well as the inner " The"): the first
    :data:`TRAINING_ARTICLES` synthetic articles, then every printable ASCII character once,
    so that no test prompt meets a character the SentencePiece-style tokenizer lacks."""
    lines = (line.strip() for line in synthetic_text(TRAINING_ARTICLES).splitlines())
    alphabet = " ".join(c for c in string.printable if not c.isspace())
    return (*(line for line in lines if line), alphabet)


def write_corpus(path: Path, n: int = TRAINING_ARTICLES, seed: int = 0) -> Path:
    """Write ``n`` synthetic articles to ``path`` (UTF-8) as a statistics corpus; returns it."""
    path.write_text(synthetic_text(n, seed), encoding="utf-8")
    return path
