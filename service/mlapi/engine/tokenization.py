"""Text to model inputs, shared by every backend, by bake's probes and by the batcher.

Texts are tokenized without padding, sorted by length and cut into forward passes that respect both a text count
and a token budget, each padded only to its own longest text: short texts never pay for a long neighbour, and a
pass ends where padding would cost more than starting another.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Encoding, Tokenizer

from mlapi.engine.shaping import DEFAULT_PASS_OVERHEAD_TOKENS, cut_passes

TOKENIZER_FILE = "tokenizer.json"


@dataclass(frozen=True)
class TokenBatch:
    """One forward pass worth of padded inputs, as the graph's named int64 arrays."""

    arrays: dict[str, np.ndarray]

    @property
    def shape(self) -> tuple[int, int]:
        """(texts, tokens per text) of this pass."""
        rows, cols = self.arrays["input_ids"].shape
        return int(rows), int(cols)


class TextEncoder:
    """Tokenizes texts for one baked model and lays them out into padded passes."""

    def __init__(self, tokenizer_path: Path, max_length: int, input_names: list[str]) -> None:
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length)
        self.max_length = max_length
        self.input_names = list(input_names)
        pad = self._tokenizer.padding
        self._pad_id = (pad or {}).get("pad_id", 0)
        token = self._tokenizer.token_to_id("[PAD]")
        if token is not None:
            self._pad_id = token

    def encode(self, texts: list[str]) -> list[Encoding]:
        """Token ids for each text, truncated to the model's maximum length."""
        return self._tokenizer.encode_batch(texts, add_special_tokens=True)

    def pad(self, encodings: list[Encoding]) -> TokenBatch:
        """One padded pass for these encodings."""
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = 1
            types[row, :n] = enc.type_ids
        available = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        return TokenBatch({name: available[name] for name in self.input_names})

    def passes(
        self, texts: list[str], max_size: int, max_tokens: int, overhead_tokens: float = DEFAULT_PASS_OVERHEAD_TOKENS
    ) -> Iterator[tuple[list[int], TokenBatch]]:
        """Yield (positions in `texts`, padded pass) covering every text once, shortest texts first.

        Passes are cut where padding would cost more than another pass (see `shaping.cut_passes`).
        """
        encodings = self.encode(texts)
        widths = [len(e.ids) for e in encodings]
        for chunk in cut_passes(widths, max_size, max_tokens, overhead_tokens):
            yield chunk, self.pad([encodings[i] for i in chunk])
