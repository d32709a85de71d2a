"""A key's texts budget holds whatever the JSON spelling: the charge and the computation read the same parse."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest
from mlapi.auth.keys import generate_key, key_line

TEXTS = [f"text number {i}" for i in range(1000)]
LENIENT_SPELLINGS = {
    "nan": b'{"text": ' + str(TEXTS).replace("'", '"').encode() + b', "x": NaN}',
    "infinity": b'{"x": -Infinity, "text": ' + str(TEXTS).replace("'", '"').encode() + b"}",
    "overflow": b'{"x": 1e999, "text": ' + str(TEXTS).replace("'", '"').encode() + b"}",
    "bom": codecs.BOM_UTF8 + b'{"text": ' + str(TEXTS).replace("'", '"').encode() + b"}",
    "utf16": ('{"text": ' + str(TEXTS).replace("'", '"') + "}").encode("utf-16"),
    "utf32": ('{"text": ' + str(TEXTS).replace("'", '"') + "}").encode("utf-32"),
}


@pytest.fixture
def small_key(tmp_path: Path) -> tuple[Path, str]:
    key = generate_key()
    path = tmp_path / "keys.txt"
    path.write_text(key_line("small", key, texts=20) + "\n")
    return path, key


@pytest.mark.parametrize("spelling", sorted(LENIENT_SPELLINGS))
def test_a_thousand_texts_in_any_spelling_validation_reads_are_charged_a_thousand(
    make_client, minilm_dir, small_key, spelling: str
) -> None:
    path, key = small_key
    body = LENIENT_SPELLINGS[spelling]
    with make_client(minilm_dir, api_keys_file=path) as client:
        headers = {"X-API-Key": key, "Content-Type": "application/json"}
        statuses = [client.post("/predict", content=body, headers=headers).status_code for _ in range(4)]
    # The bucket holds one full request (1,000 texts) and refills 20 a second: one answer at most, then 429.
    assert statuses.count(200) + statuses.count(422) <= 1, statuses
    assert statuses[1:].count(429) == 3, statuses


def test_a_thousand_texts_in_plain_json_are_charged_a_thousand(make_client, minilm_dir, small_key) -> None:
    path, key = small_key
    with make_client(minilm_dir, api_keys_file=path) as client:
        statuses = [client.post("/predict", json={"text": TEXTS}, headers={"X-API-Key": key}).status_code
                    for _ in range(3)]
    assert statuses.count(200) <= 1 and 429 in statuses


def test_the_charge_counts_what_validation_reads() -> None:
    from mlapi.auth.access import count_texts, parse_body

    for body in LENIENT_SPELLINGS.values():
        assert count_texts(parse_body(body)) >= 1000
