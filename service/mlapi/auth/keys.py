"""API keys: how they are made, how they are stored (salted hashes only), and how a presented key is checked.

The keys file (`MLAPI_API_KEYS_FILE`, or the same text in `MLAPI_API_KEYS`) holds one key per line:

    # NAME  HASH                      [rate=REQUESTS/S] [texts=TEXTS/S] [revoked]
    alice   sha256:<salt hex>:<digest hex>  rate=5 texts=50
    old-ci  sha256:<salt hex>:<digest hex>  revoked

The server never sees a key in clear except in the request that presents it: each line stores SHA-256 of a random
per-key salt followed by the key, and a presented key is hashed with every line's salt and compared in constant
time against every line (no early exit), so timing says nothing about which key, or which prefix, matched.
Keys are 256-bit random, so a fast hash is enough; a slow one would only cost CPU on every request.

`KeyStore` re-reads the file every `reload_seconds` and swaps the table in when the content changed, so a new key
works and a removed or revoked one stops working without a restart. It reads the path each time (following
symlinks), which is what a Kubernetes Secret volume needs: the kubelet replaces the `..data` symlink atomically.
A file that is missing or malformed during a reload keeps the last good table and is logged.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

KEY_PREFIX = "mlapi_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_HASH = re.compile(r"^sha256:([0-9a-f]{32}):([0-9a-f]{64})$")


class KeysFileError(ValueError):
    """The keys file (or variable) cannot be read or has a malformed line; the message names the line."""


@dataclass(frozen=True)
class ApiKey:
    """One line of the keys file: who, the salted hash, the optional per-key rates, and whether it is revoked."""

    name: str
    salt: bytes
    digest: bytes
    rate: float | None = None
    texts: float | None = None
    revoked: bool = False

    def matches(self, presented: bytes) -> bool:
        """Whether `presented` is this key; constant time in the presented value."""
        return hmac.compare_digest(hashlib.sha256(self.salt + presented).digest(), self.digest)


def generate_key() -> str:
    """A new random key (256 bits), recognisable by its prefix in logs and secret scanners."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str, salt: bytes | None = None) -> str:
    """The stored form of a key: `sha256:<salt hex>:<digest hex>` with a fresh 128-bit salt."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    return f"sha256:{salt.hex()}:{hashlib.sha256(salt + key.encode()).hexdigest()}"


def key_line(name: str, key: str, rate: float | None = None, texts: float | None = None) -> str:
    """The keys-file line for a new key."""
    if not _NAME.match(name):
        raise KeysFileError(f"invalid key name {name!r}: 1-64 letters, digits, . _ @ -, not starting with . _ @ -")
    parts = [name, hash_key(key)]
    if rate is not None:
        parts.append(f"rate={_number(_positive(str(rate), 'rate', name))}")
    if texts is not None:
        parts.append(f"texts={_number(_positive(str(texts), 'texts', name))}")
    return " ".join(parts)


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _positive(raw: str, what: str, where: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise KeysFileError(f"{where}: {what} must be a number, got {raw!r}") from None
    if not value > 0 or value == float("inf"):
        raise KeysFileError(f"{where}: {what} must be a positive number, got {raw!r}")
    return value


def parse_keys(text: str, source: str = "keys") -> list[ApiKey]:
    """Every key in a keys file's text; raises `KeysFileError` naming the first bad line.

    Lines may also be separated by `;`, so the whole table fits in one environment variable.
    """
    keys: list[ApiKey] = []
    names: set[str] = set()
    for number, raw_line in enumerate(re.split(r"[\n;]", text), start=1):
        line = raw_line.split("#", 1)[0].strip()
        if not line:
            continue
        where = f"{source} entry {number}"
        fields = line.split()
        if len(fields) < 2:
            raise KeysFileError(f"{where}: expected 'NAME sha256:SALT:DIGEST [rate=R] [texts=T] [revoked]'")
        name, stored, *options = fields
        if not _NAME.match(name):
            raise KeysFileError(f"{where}: invalid name {name!r}")
        if name in names:
            raise KeysFileError(f"{where}: duplicate name {name!r}")
        match = _HASH.match(stored)
        if match is None:
            raise KeysFileError(f"{where}: the key must be stored as sha256:SALT:DIGEST (from `mlapi keys create`)")
        rate = texts = None
        revoked = False
        for option in options:
            option_name, _, value = option.partition("=")
            if option_name == "rate" and value:
                rate = _positive(value, "rate", where)
            elif option_name == "texts" and value:
                texts = _positive(value, "texts", where)
            elif option == "revoked":
                revoked = True
            else:
                raise KeysFileError(f"{where}: unknown option {option!r} (rate=R, texts=T or revoked)")
        names.add(name)
        keys.append(ApiKey(name, bytes.fromhex(match[1]), bytes.fromhex(match[2]), rate, texts, revoked))
    return keys


NO_KEYS_LINE = "# no keys"


def declares_no_keys(content: bytes) -> bool:
    """Whether a keys file says on purpose that no key is valid: a line reading exactly `# no keys`."""
    return any(line.strip().lower() == NO_KEYS_LINE.encode() for line in content.splitlines())


def read_keys_file(path: Path) -> list[ApiKey]:
    """Parse the keys file at `path` (following symlinks); raises `KeysFileError` if it is unreadable or bad."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeysFileError(f"cannot read {path}: {exc}") from None
    return parse_keys(text, str(path))


class KeyStore:
    """The current key table, re-read from its file when the content changes."""

    def __init__(self, keys: list[ApiKey], path: Path | None = None, reload_seconds: float = 10.0) -> None:
        self._keys = keys
        self._path = path
        self._reload_seconds = reload_seconds
        self._content = path.read_bytes() if path is not None else b""
        self._next_check = time.monotonic() + reload_seconds
        self.reload_errors = 0

    @classmethod
    def from_file(cls, path: Path, reload_seconds: float) -> KeyStore:
        """A store that follows `path`."""
        return cls(read_keys_file(path), path, reload_seconds)

    def lookup(self, presented: str) -> ApiKey | None:
        """The key entry whose hash matches `presented`, revoked or not, or None.

        Every entry is hashed and compared; there is no early exit.
        """
        self.maybe_reload()
        raw = presented.encode("utf-8", "surrogatepass")
        found: ApiKey | None = None
        for key in self._keys:
            if key.matches(raw):
                found = key
        return found

    @property
    def keys(self) -> list[ApiKey]:
        """The current table."""
        return list(self._keys)

    def maybe_reload(self, now: float | None = None) -> bool:
        """Re-read the file if the check interval has passed; True when a new table was swapped in."""
        now = time.monotonic() if now is None else now
        if self._path is None or now < self._next_check:
            return False
        self._next_check = now + self._reload_seconds
        try:
            content = self._path.read_bytes()
        except OSError as exc:
            # A Secret volume mid-swap, or a file being replaced: keep serving with the last good table.
            self.reload_errors += 1
            log.warning("keeping the previous API keys: cannot read %s: %s", self._path, exc)
            return False
        if content == self._content:
            return False
        try:
            keys = parse_keys(content.decode("utf-8"), str(self._path))
        except (KeysFileError, UnicodeDecodeError) as exc:
            self.reload_errors += 1
            log.error("keeping the previous API keys: %s", exc)
            return False
        if not keys and self._keys and not declares_no_keys(content):
            # A truncated write or an emptied Secret would otherwise lock every client out at once.
            self.reload_errors += 1
            log.error("keeping the previous API keys: %s now holds no key; to revoke every key on purpose, "
                      "write the line %r into it", self._path, NO_KEYS_LINE)
            return False
        self._keys, self._content = keys, content
        log.info("API keys reloaded from %s: %d keys", self._path, len(keys))
        return True
