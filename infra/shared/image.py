"""Builds the repository's Dockerfile once per model service and pushes it to ECR.

Each service gets its own image because the model weights are baked in at build time (`MODEL_ID`,
`MODEL_REVISION` build args). Workloads pull by digest (`ref`), so a deploy names exact bytes and a re-push of a
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

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

from infra.config import ModelService
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


def _entry_digest(path: Path) -> bytes:
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
        digest.update(_entry_digest(path))
    return digest.hexdigest()[:12]


def image_tag(service: ModelService, source_hash: str) -> str:
    """`<service>-<revision>-<hash>`: readable in the ECR console, valid as an OCI tag."""
    revision = re.sub(r"[^A-Za-z0-9_.-]", "-", service.model_revision)[:24]
    return f"{service.name}-{revision}-{source_hash}"


@dataclass(frozen=True)
class ModelImageArgs:
    """What to build and where to push it."""

    service: ModelService
    repository_url: pulumi.Input[str]
    registry_id: pulumi.Input[str]
    context: str  # absolute
    dockerfile: str  # absolute
    source_hash: str
    build_on_preview: bool


class ModelImage(pulumi.ComponentResource):
    """A linux/amd64 image of one model service in ECR; `ref` is `repo:tag@sha256:...`."""

    ref: pulumi.Output[str]

    def __init__(self, name: str, args: ModelImageArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:image:ModelImage", name, None, opts)
        auth = aws.ecr.get_authorization_token_output(registry_id=args.registry_id, opts=pulumi.InvokeOptions(
            parent=self))
        tag = image_tag(args.service, args.source_hash)
        cache_ref = pulumi.Output.concat(args.repository_url, ":", args.service.name, "-", BUILD_CACHE_SUFFIX)
        image = docker_build.Image(
            f"{name}-image",
            # Absolute paths: the provider runs with infra/ as its working directory.
            context=docker_build.BuildContextArgs(location=args.context),
            dockerfile=docker_build.DockerfileArgs(location=args.dockerfile),
            platforms=[docker_build.Platform.LINUX_AMD64],
            build_args={"MODEL_ID": args.service.model_id, "MODEL_REVISION": args.service.model_revision},
            # Tags must carry the registry host or the push goes to docker.io (pulumi-docker-build #241).
            tags=[pulumi.Output.concat(args.repository_url, ":", tag)],
            push=True,
            registries=[
                docker_build.RegistryArgs(
                    address=args.repository_url,
                    username=auth.user_name,
                    password=pulumi.Output.secret(auth.password),
                )
            ],
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
        self.ref = image.ref
        self.register_outputs({"ref": self.ref})
