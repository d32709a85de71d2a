"""Builds the repository's Dockerfile once per model service and pushes it to ECR.

Each service gets its own image because the model weights are baked in at build time (`MODEL_ID`,
`MODEL_REVISION` build args). Workloads pull by digest (`ref`), so a deploy names exact bytes and a re-push of a
tag can never change what runs.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws
import pulumi_docker_build as docker_build

from infra.config import ModelService
from infra.registry import BUILD_CACHE_SUFFIX

# Files whose change must produce a new image tag (tags are immutable in the repository).
_HASHED_GLOBS = ("Dockerfile", ".dockerignore", "pyproject.toml", "service/**/*.py")


def context_hash(context: Path, dockerfile: str) -> str:
    """A short digest of the build inputs, so every code change gets a fresh, never-reused tag."""
    digest = hashlib.sha256()
    paths: set[Path] = {context / dockerfile}
    for pattern in _HASHED_GLOBS:
        paths.update(context.glob(pattern))
    for path in sorted(p for p in paths if p.is_file()):
        digest.update(path.relative_to(context).as_posix().encode())
        digest.update(path.read_bytes())
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
    context: str
    dockerfile: str
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
            context=docker_build.BuildContextArgs(location=args.context),
            dockerfile=docker_build.DockerfileArgs(location=f"{args.context.rstrip('/')}/{args.dockerfile}"),
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
