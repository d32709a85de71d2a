"""Where a checkpoint comes from: the bundled default, a local directory, a Hugging Face hub repo, or S3.

`mlapi bake SOURCE` fetches SOURCE into a local checkpoint directory and records where the weights came from,
pinned: the commit a hub revision resolved to, or each S3 object's key, size, ETag and version. Every way a fetch
can fail becomes a `SourceError` whose message names SOURCE and the problem in one line.

The parsing and the revision check at the top use the standard library only, so a program that cannot install
torch (the infra program validating `services[].modelId` at preview) applies the same rules.
"""

from __future__ import annotations

import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal

from mlapi.build.export import HUB_FALLBACK_WEIGHTS, HUB_PATTERNS, SourceNotFound, bundled_model_dir

if TYPE_CHECKING:
    from mlapi.engine.manifest import Origin

log = logging.getLogger(__name__)

Kind = Literal["bundled", "local", "hub", "s3"]

COMMIT_SHA = re.compile(r"[0-9a-f]{40}")
# Hub repo ids: `name` (legacy, un-namespaced) or `namespace/name`; the hub's own rules, less its length checks.
HUB_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")
# S3 bucket names (general purpose buckets): 3-63 lower-case letters, digits, dots and hyphens.
BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
LOCAL_PREFIXES = ("/", "./", "../", "~", ".")


class SourceError(SourceNotFound):
    """SOURCE cannot be fetched or is not a checkpoint; the message is one line for the person running bake."""


def one_line(text: object) -> str:
    """`text` with its line breaks and runs of spaces collapsed: library errors span lines, a CLI error must not."""
    return " ".join(str(text).split())


def is_commit_sha(revision: str | None) -> bool:
    """Whether `revision` is a full 40-hex commit SHA, the only hub revision that never moves."""
    return revision is not None and COMMIT_SHA.fullmatch(revision) is not None


def revision_problem(model_id: str, revision: str | None) -> str | None:
    """Why `revision` does not pin hub model `model_id` (None when it does): a sentence saying how to find the SHA.

    A branch or tag (`main`, `v1`) resolves to whatever the repo holds when the image is built, so the same config
    can bake different weights; only a commit SHA names one set of files.
    """
    if is_commit_sha(revision):
        return None
    what = "no revision" if not revision else f"revision {revision!r} is a branch or tag, not a commit SHA"
    return (
        f"{model_id}: {what}; pin the 40-hex commit SHA instead: "
        f"`hf models info {model_id} --expand sha` prints it (or `HfApi().model_info({model_id!r}).sha` in Python, "
        f"or the commit history under \"Files and versions\" on the model's hub page)"
    )


@dataclass(frozen=True)
class ModelSource:
    """SOURCE parsed: its kind and where it points (a path, a hub id, or a bucket and prefix)."""

    kind: Kind
    text: str
    path: Path | None = None
    bucket: str | None = None
    prefix: str = ""

    @property
    def uri(self) -> str:
        """How messages and the manifest name this source."""
        if self.kind == "s3":
            return f"s3://{self.bucket}/{self.prefix}"
        return self.text


def parse_source(source: str | None, *, check_disk: bool = True) -> ModelSource:
    """Tell SOURCE's kind: None is the bundled model, `s3://` is S3, a path is local, anything else a hub id.

    With `check_disk`, an existing directory is local whatever it looks like (`org/name` may be a folder here);
    without it (config validation on another machine) only an explicit path (`/`, `./`, `../`, `~`) is local.
    Raises `SourceError` for text that is none of these.
    """
    if source is None:
        return ModelSource("bundled", "sentence-transformers/all-MiniLM-L6-v2 (bundled)", path=bundled_model_dir())
    text = source.strip()
    if text.startswith("s3://"):
        bucket, _, prefix = text.removeprefix("s3://").partition("/")
        if not BUCKET.fullmatch(bucket):
            raise SourceError(f"{source}: {bucket!r} is not an S3 bucket name (3-63 lower-case letters, digits, "
                              f"dots, hyphens); write s3://BUCKET/PREFIX")
        prefix = prefix.strip("/")
        return ModelSource("s3", text, bucket=bucket, prefix=f"{prefix}/" if prefix else "")
    if "://" in text:
        raise SourceError(f"{source}: only s3:// URIs are fetched; give a hub id, a local directory or s3://BUCKET/PREFIX")
    path = Path(text).expanduser()
    if (check_disk and path.is_dir()) or text.startswith(LOCAL_PREFIXES):
        return ModelSource("local", text, path=path)
    if check_disk and path.exists():
        raise SourceError(f"{source}: is a file; give a checkpoint directory (config.json, tokenizer, weights)")
    if HUB_ID.fullmatch(text) and "--" not in text and ".." not in text and len(text) <= 96:
        return ModelSource("hub", text)
    raise SourceError(f"{source}: not a directory here, an s3://BUCKET/PREFIX URI, or a Hugging Face hub id "
                      f"(namespace/name)")


@dataclass
class Fetched:
    """A local checkpoint directory for SOURCE, and where its weights came from."""

    path: Path
    origin: Origin


def fetch(source: ModelSource, revision: str | None, workdir: Path, token: str | None = None) -> Fetched:
    """Bring SOURCE to a local checkpoint directory (S3 objects under `workdir`, hub files in the hub cache)."""
    from mlapi.engine.manifest import Origin

    if source.kind in ("bundled", "local"):
        assert source.path is not None
        if not source.path.is_dir():
            raise SourceError(f"{source.text}: no such directory")
        fetched = Fetched(source.path, Origin(kind=source.kind))
    elif source.kind == "hub":
        fetched = fetch_hub(source.text, revision, token)
    else:
        fetched = fetch_s3(source, workdir)
    require_checkpoint(fetched.path, source.uri)
    return fetched


def require_checkpoint(path: Path, uri: str) -> None:
    """Fail in one line unless `path` looks like a Hugging Face checkpoint (config.json at its top)."""
    if (path / "config.json").is_file():
        return
    nested = sorted(p.parent.relative_to(path).as_posix() for p in path.rglob("config.json"))
    hint = f"; one is under {nested[0]}/, point SOURCE there" if nested else \
        " (a checkpoint directory holds config.json, the tokenizer files and the weights)"
    raise SourceError(f"{uri}: no config.json at its top, so it is not a Hugging Face checkpoint{hint}")


def fetch_hub(model_id: str, revision: str | None, token: str | None) -> Fetched:
    """Download the checkpoint files of hub repo `model_id` at `revision`; record the commit it resolved to.

    `token` (from HF_TOKEN) reads private and gated repos; it goes to huggingface_hub only, never into a message.
    """
    from huggingface_hub import snapshot_download

    from mlapi.engine.manifest import Origin

    log.info("fetching %s%s from the Hugging Face hub", model_id, f" at {revision}" if revision else "")
    try:
        local = Path(snapshot_download(model_id, revision=revision, allow_patterns=HUB_PATTERNS, token=token))
        # The cache names each snapshot after its commit; the fallback fetch reads that commit, not the ref again.
        commit = local.name if is_commit_sha(local.name) else None
        if not any(local.glob("*.safetensors")):
            local = Path(snapshot_download(model_id, revision=commit or revision, allow_patterns=HUB_FALLBACK_WEIGHTS,
                                           token=token))
    except Exception as exc:  # noqa: BLE001 - hub errors come in many types; each becomes one line
        raise SourceError(hub_error_message(model_id, revision, token, exc)) from exc
    if commit:
        log.info("%s resolved to commit %s", model_id, commit)
    return Fetched(local, Origin(kind="hub", commit=commit))


def hub_error_message(model_id: str, revision: str | None, token: str | None, exc: BaseException) -> str:
    """One line naming what went wrong fetching `model_id` from the hub, and what to do about it."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f" at revision {revision}" if revision else ""
    if isinstance(exc, LocalEntryNotFoundError) and isinstance(exc.__cause__, HfHubHTTPError):
        exc = exc.__cause__  # the hub answered with an error, and the local cache had nothing to fall back on
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, GatedRepoError):
        return (f"hub model {model_id} is gated: accept its terms on its hub page, then set HF_TOKEN to a token of "
                f"that account" + (" (the token given was refused)" if token else ""))
    if isinstance(exc, RepositoryNotFoundError):
        if token:
            return f"hub model {model_id} not found, or the token in HF_TOKEN cannot read it"
        return f"hub model {model_id} not found (if it is private, set HF_TOKEN to a token that can read it)"
    if isinstance(exc, RevisionNotFoundError):
        return f"hub model {model_id} has no revision {revision!r} (a branch, tag or commit SHA of the repo)"
    if isinstance(exc, HfHubHTTPError) and status == 401:
        return f"the hub refused the token in HF_TOKEN for {model_id} (401): it is invalid or expired"
    if isinstance(exc, LocalEntryNotFoundError):
        return (f"{model_id!r} is not a local directory and could not be fetched from the Hugging Face hub{at}: the "
                f"hub is unreachable (or HF_HUB_OFFLINE is set) and the local hub cache does not hold it")
    if isinstance(exc, HfHubHTTPError) and status is not None:
        return f"the Hugging Face hub answered {status} for {model_id}{at}: {one_line(exc)[:200]}"
    return (f"{model_id!r} is not a local directory and could not be fetched from the Hugging Face hub{at}: "
            f"{type(exc).__name__}: {one_line(exc)[:200]}")


def fetch_s3(source: ModelSource, workdir: Path) -> Fetched:
    """Download every object under the S3 prefix into `workdir`, recording each key, size, ETag and version.

    boto3's own credential chain and settings apply (AWS_PROFILE, role credentials, AWS_REGION,
    AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL). Each object is read once, by version when the bucket keeps versions,
    so what the manifest records is exactly what was baked.
    """
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from mlapi.engine.manifest import Origin, SourceObject

    assert source.bucket is not None
    log.info("fetching %s", source.uri)
    objects: list[SourceObject] = []
    try:
        s3 = boto3.client("s3")
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=source.bucket, Prefix=source.prefix)
        listed = [item for page in pages for item in page.get("Contents", []) if not item["Key"].endswith("/")]
        if not listed:
            raise SourceError(f"{source.uri}: no objects under this prefix")
        for item in listed:
            relative = PurePosixPath(item["Key"][len(source.prefix):])
            if ".." in relative.parts or relative.is_absolute():
                raise SourceError(f"{source.uri}: object key {item['Key']!r} would land outside the checkpoint")
            target = workdir.joinpath(*relative.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            response = s3.get_object(Bucket=source.bucket, Key=item["Key"])
            with target.open("wb") as handle:
                shutil.copyfileobj(response["Body"], handle, 8 << 20)
            objects.append(SourceObject(key=item["Key"], size=int(response["ContentLength"]),
                                        etag=str(response["ETag"]).strip('"'),
                                        version_id=_version(response.get("VersionId"))))
    except ClientError as exc:
        raise SourceError(s3_error_message(source, exc.response)) from exc
    except BotoCoreError as exc:
        raise SourceError(s3_error_message(source, exc)) from exc
    log.info("fetched %d objects, %.1f MB", len(objects), sum(o.size for o in objects) / 1e6)
    return Fetched(workdir, Origin(kind="s3", objects=objects))


def _version(version_id: object) -> str | None:
    # Unversioned buckets answer no VersionId, or the literal "null" once versioning has been suspended.
    return None if version_id in (None, "", "null") else str(version_id)


def s3_error_message(source: ModelSource, error: Any) -> str:
    """One line for a failed S3 fetch: a missing bucket, refused or missing credentials, or an unreachable endpoint."""
    from botocore.exceptions import EndpointConnectionError, NoCredentialsError, PartialCredentialsError

    if isinstance(error, NoCredentialsError | PartialCredentialsError):
        return (f"{source.uri}: no AWS credentials found ({one_line(error)}); set AWS_PROFILE, or "
                f"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run with an IAM role")
    if isinstance(error, EndpointConnectionError):
        return f"{source.uri}: cannot reach S3 ({one_line(error)}); check AWS_ENDPOINT_URL_S3 / AWS_REGION"
    if isinstance(error, Exception):
        return f"{source.uri}: {type(error).__name__}: {one_line(error)[:200]}"
    details = error.get("Error", {})
    code = str(details.get("Code", ""))
    status = error.get("ResponseMetadata", {}).get("HTTPStatusCode")
    message = one_line(details.get("Message", ""))[:200]
    if code in ("NoSuchBucket", "404") and status == 404:
        return f"{source.uri}: bucket {source.bucket} does not exist"
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken", "TokenRefreshRequired"):
        return f"{source.uri}: AWS refused the credentials in use ({code}: {message})"
    if code in ("AccessDenied", "AllAccessDisabled", "403") or status == 403:
        return (f"{source.uri}: access denied ({code or status}); the credentials in use need s3:ListBucket on "
                f"{source.bucket} and s3:GetObject under the prefix")
    return f"{source.uri}: S3 answered {status} {code}: {message}"
