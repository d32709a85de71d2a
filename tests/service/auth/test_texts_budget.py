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
def test_a_body_only_a_lenient_parser_reads_is_refused_before_it_is_charged(
    make_client, minilm_dir, small_key, spelling: str
) -> None:
    path, key = small_key
    with make_client(minilm_dir, api_keys_file=path) as client:
        headers = {"X-API-Key": key, "Content-Type": "application/json"}
        for _ in range(3):
            answer = client.post("/predict", content=LENIENT_SPELLINGS[spelling], headers=headers)
            assert answer.status_code == 422, answer.text[:200]
            assert answer.json()["error_type"] == "validation"
            assert "strict JSON" in answer.json()["error"]
        # Nothing was charged: the key's one request worth of texts is still there.
        ok = client.post("/predict", json={"text": ["fine"]}, headers={"X-API-Key": key})
        assert ok.status_code == 200


def test_a_thousand_texts_in_plain_json_are_charged_a_thousand(make_client, minilm_dir, small_key) -> None:
    path, key = small_key
    with make_client(minilm_dir, api_keys_file=path) as client:
        statuses = [client.post("/predict", json={"text": TEXTS}, headers={"X-API-Key": key}).status_code
                    for _ in range(3)]
    assert statuses.count(200) <= 1 and 429 in statuses


def test_lenient_json_is_refused_without_keys_too(minilm_client) -> None:
    answer = minilm_client.post("/predict", content=b'{"text": ["a"], "x": NaN}',
                                headers={"Content-Type": "application/json"})
    assert answer.status_code == 422
