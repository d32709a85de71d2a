"""Where a service's model weights come from, and a digest that changes exactly when they do.

`services[].modelId` names one of three sources. Image tags in ECR are immutable, so each needs a revision that
pins its bytes: a hub model its commit SHA (given in config), a local checkpoint the digest of its files, an S3
prefix the digest of its object listing (keys, sizes and ETags, read with boto3 at preview). A digest that moved
with anything but the weights would rebuild and re-push for nothing; one that missed a change would ship stale
weights under an old tag.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

SourceKind = Literal["hub", "local", "s3"]

# Hugging Face repo ids: `org/name`, letters, digits, `-`, `_`, `.` (huggingface_hub validate_repo_id).
HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}$")
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
# S3 bucket naming rules (lower case, 3-63 characters) and a non-empty key prefix.
S3_URI_RE = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/(?P<prefix>[^\s]+?)/?$")
# The file every transformers checkpoint has; a directory or prefix without it is not a model.
CHECKPOINT_MARKER = "config.json"


@dataclass(frozen=True)
class ModelSource:
    """A model's weights: `kind`, where they are (`location`: hub id, absolute directory or `s3://bucket/prefix`)
    and `revision`, what pins them (the hub commit SHA, or the sha256 digest of the local files or S3 listing)."""

    kind: SourceKind
    location: str
    revision: str


class SourceError(ValueError):
    """A model source that cannot be baked; config.py turns it into a ConfigError naming the key."""


def local_digest(directory: Path) -> str:
    """sha256 over every file of a checkpoint directory that a build would send: names, modes and bytes.

    The same walk as the image context (.dockerignore honoured if the directory has one), so the digest covers
    exactly the named build context docker-build sends.
    """
    from infra.shared.image import context_entries, entry_digest

    digest = hashlib.sha256(b"local\0")
    for path in context_entries(directory):
        digest.update(path.relative_to(directory).as_posix().encode() + b"\0")
        digest.update(entry_digest(path))
    return digest.hexdigest()


def s3_listing(bucket: str, prefix: str, session: Any) -> list[dict[str, Any]]:
    """Every object under `prefix/` (keys, sizes, ETags), read with the session's credentials."""
    client = session.client("s3")
    paginator = client.get_paginator("list_objects_v2")
    objects: list[dict[str, Any]] = []
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
        objects.extend(page.get("Contents", []))
    return objects


def s3_digest(bucket: str, prefix: str, session: Any) -> str:
    """sha256 over the prefix's listing: each key (relative to the prefix), size and ETag.

    An ETag changes when an object's bytes do (an MD5 for single-part uploads, the MD5 of the parts' MD5s for
    multipart ones); VersionIds are left out because re-uploading identical bytes makes a new version, which
    would rebuild an image whose weights did not change.
    """
    try:
        objects = s3_listing(bucket, prefix, session)
    except Exception as err:  # botocore raises NoCredentialsError, ClientError, EndpointConnectionError, ...
        raise SourceError(f"cannot list s3://{bucket}/{prefix}/ with the deploying credentials "
                          f"({type(err).__name__}: {err}); the preview needs s3:ListBucket on the bucket") from err
    base = prefix.rstrip("/") + "/"
    names = {obj["Key"][len(base):] for obj in objects}
    if not objects:
        raise SourceError(f"s3://{bucket}/{base} holds no objects")
    if CHECKPOINT_MARKER not in names:
        raise SourceError(f"s3://{bucket}/{base} has no {CHECKPOINT_MARKER}: point it at the checkpoint's folder "
                          f"(found {', '.join(sorted(names)[:5])})")
    digest = hashlib.sha256(b"s3\0")
    for obj in sorted(objects, key=lambda o: o["Key"]):
        digest.update(f"{obj['Key'][len(base):]}\0{obj['Size']}\0{obj['ETag']}\0".encode())
    return digest.hexdigest()


def aws_session(profile: str | None, region: str) -> Any:
    """A boto3 session with the credentials the deployment itself uses (the standard chain, `aws:profile`)."""
    import boto3

    try:
        return boto3.Session(profile_name=profile or None, region_name=region or None)
    except Exception as err:  # botocore ProfileNotFound and friends
        raise SourceError(f"cannot set up AWS credentials for the S3 model ({type(err).__name__}: {err}); "
                          "check aws:profile") from err


def aws_build_credentials(session: Any) -> dict[str, str]:
    """The deploying identity's credentials as BuildKit secret values (ids `aws_access_key_id`, ...), for a
    build that fetches a model from S3; empty when there are none (the build then fails naming them)."""
    credentials = session.get_credentials()
    if credentials is None:
        return {}
    frozen = credentials.get_frozen_credentials()
    values = {"aws_access_key_id": frozen.access_key, "aws_secret_access_key": frozen.secret_key}
    if frozen.token:
        values["aws_session_token"] = frozen.token
    return values
