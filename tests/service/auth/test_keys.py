"""API keys: stored only as salted hashes, checked in constant time, reloaded when the file (or symlink) changes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlapi.auth.keys import KeysFileError, KeyStore, generate_key, hash_key, key_line, parse_keys, read_keys_file
from mlapi.settings import Settings
from pydantic import ValidationError


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    service = str(Path(__file__).resolve().parents[3] / "service")
    environ = {**os.environ, "PYTHONPATH": service, **(env or {})}
    return subprocess.run([sys.executable, "-m", "mlapi", *args], capture_output=True, text=True, env=environ,
                          timeout=60)


def test_key_line_stores_a_salted_hash_never_the_key() -> None:
    key = generate_key()
    line = key_line("alice", key, rate=5, texts=50)
    assert key not in line and key.removeprefix("mlapi_") not in line
    [entry] = parse_keys(line)
    assert (entry.name, entry.rate, entry.texts, entry.revoked) == ("alice", 5.0, 50.0, False)
    assert entry.matches(key.encode())
    assert not entry.matches(key[:-1].encode())
    # The same key under two salts hashes differently: a leaked table cannot be matched against another.
    assert hash_key(key) != hash_key(key)


def test_parse_accepts_comments_semicolons_and_revoked() -> None:
    a, b = generate_key(), generate_key()
    text = f"# team keys\n{key_line('a', a)}  # ci\n\n{key_line('b', b)} revoked"
    keys = parse_keys(text.replace("\n", ";"))
    assert [(k.name, k.revoked) for k in keys] == [("a", False), ("b", True)]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("alice", "expected 'NAME"),
        ("alice plaintext-key", "sha256:SALT:DIGEST"),
        (f"alice {hash_key('k')} rate=0", "positive"),
        (f"alice {hash_key('k')} rate=fast", "number"),
        (f"alice {hash_key('k')} burst=3", "unknown option"),
        (f"alice {hash_key('k')}\nalice {hash_key('j')}", "duplicate name"),
        (f"-x {hash_key('k')}", "invalid name"),
    ],
)
def test_malformed_lines_are_refused_naming_the_entry(text: str, reason: str) -> None:
    with pytest.raises(KeysFileError, match=reason) as error:
        parse_keys(text, "keys.txt")
    assert "keys.txt entry" in str(error.value)


def test_lookup_finds_the_key_and_nothing_else(tmp_path: Path) -> None:
    keys = {name: generate_key() for name in ("a", "b", "c")}
    store = KeyStore(parse_keys("\n".join(key_line(n, k) for n, k in keys.items())))
    assert {store.lookup(k).name for k in keys.values()} == {"a", "b", "c"}  # type: ignore[union-attr]
    assert store.lookup("mlapi_unknown") is None
    assert store.lookup("") is None


def test_store_reloads_when_the_file_changes_and_keeps_the_last_good_table(tmp_path: Path) -> None:
    old, new = generate_key(), generate_key()
    path = tmp_path / "keys"
    path.write_text(key_line("old", old) + "\n")
    store = KeyStore.from_file(path, reload_seconds=10)
    assert store.lookup(old) is not None and store.lookup(new) is None
    path.write_text(key_line("new", new) + "\n")
    assert store.lookup(new) is None  # not before the check interval
    assert store.maybe_reload(now=10**9) is True
    assert store.lookup(new) is not None and store.lookup(old) is None
    path.write_text("garbage line\n")
    assert store.maybe_reload(now=2 * 10**9) is False
    assert store.lookup(new) is not None and store.reload_errors == 1
    path.unlink()
    assert store.maybe_reload(now=3 * 10**9) is False
    assert store.lookup(new) is not None and store.reload_errors == 2


def test_store_follows_a_kubernetes_style_atomic_symlink_swap(tmp_path: Path) -> None:
    """The kubelet writes a new timestamped directory, then renames a `..data` symlink over the old one."""
    old, new = generate_key(), generate_key()
    mount = tmp_path / "secret"
    (mount / "..2026_11_25_01").mkdir(parents=True)
    (mount / "..2026_11_25_01" / "keys").write_text(key_line("old", old))
    (mount / "..data").symlink_to("..2026_11_25_01")
    (mount / "keys").symlink_to("..data/keys")
    store = KeyStore.from_file(mount / "keys", reload_seconds=1)
    assert store.lookup(old) is not None

    (mount / "..2026_11_25_02").mkdir()
    (mount / "..2026_11_25_02" / "keys").write_text(key_line("old", old) + " revoked\n" + key_line("new", new))
    (mount / "..data_tmp").symlink_to("..2026_11_25_02")
    os.replace(mount / "..data_tmp", mount / "..data")
    (mount / "..2026_11_25_01" / "keys").unlink()
    (mount / "..2026_11_25_01").rmdir()

    assert store.maybe_reload(now=10**9) is True
    assert store.lookup(new).name == "new"  # type: ignore[union-attr]
    assert store.lookup(old).revoked is True  # type: ignore[union-attr]


def test_settings_refuse_a_bad_keys_file_naming_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(ValidationError, match="api_keys_file"):
        Settings(api_keys_file=missing)
    bad = tmp_path / "keys"
    bad.write_text("alice not-a-hash\n")
    with pytest.raises(ValidationError, match="entry 1"):
        Settings(api_keys_file=bad)
    with pytest.raises(ValidationError, match="api_keys"):
        Settings(api_keys="alice not-a-hash")
    good = key_line("a", generate_key())
    bad.write_text(good)
    with pytest.raises(ValidationError, match="not both"):
        Settings(api_keys_file=bad, api_keys=good)
    assert Settings(api_keys=good).auth_enabled and not Settings().auth_enabled


def test_cli_create_prints_the_key_once_and_a_line_that_admits_it(tmp_path: Path) -> None:
    result = _cli("keys", "create", "ci-bot", "--rate", "5")
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    key = next(line for line in lines if line.startswith("mlapi_"))
    entry_line = next(line for line in lines if line.startswith("ci-bot "))
    assert key not in entry_line
    [entry] = parse_keys(entry_line)
    assert entry.matches(key.encode()) and entry.rate == 5.0
    assert _cli("keys", "create", "ci-bot", "--rate", "0").returncode == 2


def test_cli_list_shows_names_and_rates_never_keys(tmp_path: Path) -> None:
    key = generate_key()
    path = tmp_path / "keys"
    path.write_text(key_line("alice", key, rate=5) + "\n" + key_line("bob", generate_key()) + " revoked\n")
    for result in (_cli("keys", "list", "--file", str(path)),
                   _cli("keys", "list", env={"MLAPI_API_KEYS_FILE": str(path)}),
                   _cli("keys", "list", env={"MLAPI_API_KEYS": path.read_text()})):
        assert result.returncode == 0, result.stderr
        assert "alice" in result.stdout and "5/s" in result.stdout and "revoked" in result.stdout
        assert key not in result.stdout and "sha256" not in result.stdout
    assert read_keys_file(path)[1].revoked
    missing = _cli("keys", "list", env={"MLAPI_API_KEYS_FILE": "", "MLAPI_API_KEYS": ""})
    assert missing.returncode == 2 and "MLAPI_API_KEYS_FILE" in missing.stderr
