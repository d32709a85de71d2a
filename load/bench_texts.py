"""The benchmark's texts in Python, made exactly as load/texts.js makes them for k6.

The engine-alone measurement must run the same kind of texts as the HTTP scenarios, so this reads the word list
from texts.js (one source of truth) and builds texts with the same rule: five words that spell a unique id in base
256, then random filler words (0-10 for short texts, 5-15 words in all; 18-31 for long ones, 25-40 tokens).
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterator
from pathlib import Path

TEXTS_JS = Path(__file__).resolve().parent / "texts.js"
ID_WORDS = 5
BASE = 256
# Filler words per text, inclusive, for each text length the scripts know (LENGTH=short|long in k6).
FILLER = {"short": (0, 10), "long": (18, 31)}


def words(path: Path = TEXTS_JS) -> list[str]:
    """The WORDS array of texts.js, in order."""
    body = re.search(r"export const WORDS = \[(.*?)\];", path.read_text(), re.S)
    if body is None:
        raise ValueError(f"no WORDS array in {path}")
    return re.findall(r"'([^']+)'", body.group(1))


def id_words(vocab: list[str], number: int) -> list[str]:
    """Five words spelling `number` in base 256, as texts.js's idWords."""
    out = []
    for _ in range(ID_WORDS):
        out.append(vocab[number % BASE])
        number //= BASE
    return out


def iter_unique_texts(length: str = "short", seed: int = 0) -> Iterator[str]:
    """Distinct texts of the given length class, without end, reproducible from `seed`."""
    vocab = words()
    low, high = FILLER[length]
    rng = random.Random(seed)
    offset = 10**9 * (seed + 1)
    for i in itertools.count():
        yield " ".join(id_words(vocab, offset + i) + [rng.choice(vocab) for _ in range(rng.randint(low, high))])


def unique_texts(count: int, length: str = "short", seed: int = 0) -> list[str]:
    """`count` distinct texts of the given length class, reproducible from `seed`."""
    return list(itertools.islice(iter_unique_texts(length, seed), count))
