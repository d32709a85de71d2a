"""Builds the repository's Dockerfile once per model service (and once more for its candidate) and pushes it to ECR.

Each service gets its own image because the model weights are baked in at build time: a hub model by id and
commit (`MODEL_ID`, `MODEL_REVISION` build args, a private repo's token as a BuildKit secret), a local checkpoint
sent alone as the `model` named build context, an S3 prefix fetched by the bake step with the deployment's AWS
credentials as BuildKit secrets. Workloads pull by digest (`ref`), so a deploy names exact bytes and a re-push of a
tag can never change what runs.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

from infra.config import ModelService
from infra.model_source import ModelSource
from infra.shared.registry import BUILD_CACHE_SUFFIX


@dataclass(frozen=True)
class Rule:
    """One .dockerignore line: the cleaned pattern, its regex over slash-separated paths, and `!` or not."""

    text: str
    regex: re.Pattern[str]
    negate: bool


def _pattern(line: str) -> Rule:
    """One .dockerignore line as a `Rule`."""
    negate = line.startswith("!")
    text = line[1:].strip() if negate else line
    text = "/".join(part for part in text.strip("/").split("/") if part not in ("", "."))
    out, i = "", 0
    while i < len(text):
        if text.startswith("**", i):
            # `**/` matches any number of directories, a trailing `**` anything below.
            out += "(?:.*/)?" if text.startswith("**/", i) else ".*"
            i += 3 if text.startswith("**/", i) else 2
        elif text[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif text[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(text[i]), i + 1
    return Rule(text, re.compile(out + r"\Z"), negate)


def dockerignore_patterns(context: Path) -> list[Rule]:
    """The context's .dockerignore rules in order (comments and blank lines dropped)."""
    ignore = context / ".dockerignore"
    lines = ignore.read_text().splitlines() if ignore.is_file() else []
    return [_pattern(line.strip()) for line in lines if line.strip() and not line.lstrip().startswith("#")]


def is_sent(relative: str, rules: list[Rule]) -> bool:
    """Whether docker sends a file: the last rule matching the path or one of its parent directories wins
    (moby/patternmatcher `MatchesOrParentMatches`, the semantics BuildKit applies to .dockerignore)."""
    parts = relative.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    sent = True
    for rule in rules:
        if any(rule.regex.match(c) for c in candidates):
            sent = rule.negate
    return sent


def _may_reinclude(directory: str, rules: list[Rule]) -> bool:
    """Whether an exception rule could match something below an excluded directory (else skip walking it)."""
    parts = directory.split("/")
    for rule in rules:
        if not rule.negate:
            continue
        segments = rule.text.split("/")
        head = segments[: len(parts)]
        if "**" in rule.text or (
            len(segments) > len(parts) and all(fnmatch.fnmatchcase(p, s) for p, s in zip(parts, head, strict=True))
        ):
            return True
    return False


def context_files(context: Path) -> list[Path]:
    """Every file of the build context that docker would send, sorted."""
    return [p for p in context_entries(context) if not p.is_dir() or p.is_symlink()]


def context_entries(context: Path) -> list[Path]:
    """Every file, symlink and directory of the build context that docker would send, sorted."""
    rules = dockerignore_patterns(context)
    found: list[Path] = []
    for root, dirs, files in os.walk(context):
        base = Path(root).relative_to(context).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = sorted(d for d in dirs if is_sent(prefix + d, rules) or _may_reinclude(prefix + d, rules))
        found.extend(Path(root, d) for d in dirs if is_sent(prefix + d, rules))
        found.extend(Path(root, f) for f in files if is_sent(prefix + f, rules))
    return sorted(found)


def entry_digest(path: Path) -> bytes:
    """What the build context transfer sends for one entry besides its name: its type and permission bits (the
    mode BuildKit records and COPY keeps), and the file's bytes or the link's target."""
    info = path.lstat()
    kind = "l" if stat.S_ISLNK(info.st_mode) else ("d" if stat.S_ISDIR(info.st_mode) else "f")
    header = f"{kind}{stat.S_IMODE(info.st_mode):04o}\0".encode()
    if kind == "l":
        return header + os.readlink(path).encode()
    if kind == "d":
        return header
    return header + hashlib.sha256(path.read_bytes()).digest()


def context_hash(context: Path, dockerfile: Path) -> str:
    """A short digest of exactly what a build reads: the Dockerfile plus the context as .dockerignore filters it,
    each entry with its type and mode as the context transfer sends them.

    Tags are immutable in the repository, so any change to what the image can copy must give a new tag (a chmod
    included: the image keeps the mode, so a `chmod +x` is a different image), and a change to anything docker
    never sees must not (it would rebuild and re-push an existing tag, which ECR refuses with
    ImageTagAlreadyExistsException). Owners and mtimes are left out: COPY sets the owner, and a fresh clone
    gives every file a new mtime, which would change the tag of every CI run.
    """
    digest = hashlib.sha256()
    digest.update(b"dockerfile\0" + dockerfile.read_bytes())
    for path in context_entries(context):
        digest.update(path.relative_to(context).as_posix().encode() + b"\0")
        digest.update(entry_digest(path))
    return digest.hexdigest()[:12]


def image_tag(service: str, revision: str, source_hash: str) -> str:
    """`<service>-<revision>-<hash>`: readable in the ECR console, valid as an OCI tag.

    `revision` pins the weights (hub commit, or digest of a local or S3 model) and `source_hash` the code, so the
    tag changes exactly when either does.
    """
    revision = re.sub(r"[^A-Za-z0-9_.-]", "-", revision)[:24]
    return f"{service}-{revision}-{source_hash}"


# Where the Dockerfile's bake stage mounts the `model` named context (a local checkpoint).
LOCAL_MODEL_MOUNT = "/model-src"
# The build's secret ids (`RUN --mount=type=secret,id=...` in the Dockerfile's bake stage).
HF_TOKEN_SECRET = "hf_token"
AWS_SECRET_IDS = ("aws_access_key_id", "aws_secret_access_key", "aws_session_token")


@dataclass(frozen=True)
class ModelBuild:
    """How one model's source reaches the build: the build args (never a credential), the named contexts (a
    local checkpoint, sent alone) and which secrets the bake step needs."""

    build_args: dict[str, str]
    named_contexts: dict[str, str]
    needs_hf_token: bool
    needs_aws: bool


def model_build(source: ModelSource, region: str) -> ModelBuild:
    """The build inputs for one model source.

    MODEL_FINGERPRINT is the source's pinned revision: changing it invalidates the bake step's cache (every RUN
    after an ARG uses it), so an S3 prefix whose objects changed is fetched again instead of served from cache.
    """
    args = {"MODEL_ID": source.location, "MODEL_REVISION": "", "MODEL_FINGERPRINT": source.revision}
    if source.kind == "hub":
        return ModelBuild({**args, "MODEL_REVISION": source.revision}, {}, needs_hf_token=True, needs_aws=False)
    if source.kind == "local":
        return ModelBuild({**args, "MODEL_ID": LOCAL_MODEL_MOUNT}, {"model": source.location},
                          needs_hf_token=False, needs_aws=False)
    return ModelBuild({**args, "AWS_REGION": region}, {}, needs_hf_token=False, needs_aws=True)


@dataclass(frozen=True)
class ModelImageArgs:
    """What to build and where to push it.

    `hf_token` and `aws_credentials` are secret Outputs; they reach the build as BuildKit secrets only, and only
    for the source that needs them (a hub model the token, an S3 model the credentials).
    """

    service: ModelService
    repository_url: pulumi.Input[str]
    registry_id: pulumi.Input[str]
    context: str  # absolute
    dockerfile: str  # absolute
    source_hash: str
    build_on_preview: bool
    region: str = ""
    hf_token: pulumi.Output[str] | None = None
    # Plain values as boto3 resolved them; each becomes a secret Output here before any resource sees it.
    aws_credentials: dict[str, str] | None = None


class ModelImage(pulumi.ComponentResource):
    """Linux/amd64 images of one model service in ECR: `ref` (`repo:tag@sha256:...`) serves the live model;
    `candidate_image_ref` the service's candidate, when config names one (None otherwise)."""

    ref: pulumi.Output[str]
    candidate_image_ref: pulumi.Output[str] | None

    def __init__(self, name: str, args: ModelImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:image:ModelImage", name, None, opts)
        auth = aws.ecr.get_authorization_token_output(registry_id=args.registry_id, opts=pulumi.InvokeOptions(
            parent=self))
        registries = [
            docker_build.RegistryArgs(
                address=args.repository_url,
                username=auth.user_name,
                password=pulumi.Output.secret(auth.password),
            )
        ]
        service = args.service
        self.ref = self._image(f"{name}-image", args, service.source, service.name, registries)
        self.candidate_image_ref = None
        outputs: dict[str, Any] = {"ref": self.ref}
        if service.candidate is not None:
            self.candidate_image_ref = self._image(
                f"{name}-candidate-image", args, service.candidate.source, f"{service.name}-candidate", registries)
            outputs["candidate_image_ref"] = self.candidate_image_ref
        self.register_outputs(outputs)

    def _image(self, resource_name: str, args: ModelImageArgs, source: ModelSource, tag_name: str,
               registries: list[docker_build.RegistryArgs]) -> pulumi.Output[str]:
        build = model_build(source, args.region)
        tag = image_tag(tag_name, source.revision, args.source_hash)
        # One cache per image: two builds exporting max-mode cache to the same ref would overwrite each other.
        cache_ref = pulumi.Output.concat(args.repository_url, ":", tag_name, "-", BUILD_CACHE_SUFFIX)
        secrets: dict[str, pulumi.Input[str]] = {}
        if build.needs_hf_token and args.hf_token is not None:
            secrets[HF_TOKEN_SECRET] = args.hf_token
        if build.needs_aws and args.aws_credentials:
            for secret_id in AWS_SECRET_IDS:
                if args.aws_credentials.get(secret_id):
                    secrets[secret_id] = pulumi.Output.secret(args.aws_credentials[secret_id])
        image = docker_build.Image(
            resource_name,
            # Absolute paths: the provider runs with infra/ as its working directory. A local checkpoint is its own
            # named context, so only that directory is sent, never the repository around it.
            context=docker_build.BuildContextArgs(
                location=args.context,
                named={key: docker_build.ContextArgs(location=path) for key, path in build.named_contexts.items()}
                or None,
            ),
            dockerfile=docker_build.DockerfileArgs(location=args.dockerfile),
            platforms=[docker_build.Platform.LINUX_AMD64],
            build_args=build.build_args,
            # Tokens and credentials: BuildKit secrets, mounted for the bake step only; never a build arg, an ENV,
            # a layer or the image history. The provider keeps them as secret outputs in the state.
            secrets=secrets or None,
            # Session credentials change on every run; the weights they fetch are pinned by the tag and build args.
            ignore_secrets_in_diff_calculation=sorted(secrets) or None,
            # Tags must carry the registry host or the push goes to docker.io (pulumi-docker-build #241).
            tags=[pulumi.Output.concat(args.repository_url, ":", tag)],
            push=True,
            registries=registries,
            cache_from=[docker_build.CacheFromArgs(registry=docker_build.CacheFromRegistryArgs(ref=cache_ref))],
            # ECR only accepts cache manifests as OCI image manifests (docker-build "ECR cache" example).
            cache_to=[
                docker_build.CacheToArgs(
                    registry=docker_build.CacheToRegistryArgs(
                        ref=cache_ref, image_manifest=True, oci_media_types=True, mode=docker_build.CacheMode.MAX
                    )
                )
            ],
            # build_on_preview defaults to true; a CI preview should not build a 1 GB image.
            build_on_preview=args.build_on_preview,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return image.ref
