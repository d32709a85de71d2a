"""What both platforms stand on: the VPC, the ECR repository, one image per model service (two while a candidate
rolls out), and Redis."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pulumi

from infra.config import StackConfig
from infra.shared.cache import Cache, CacheArgs
from infra.shared.image import ModelImage, ModelImageArgs, context_hash
from infra.shared.network import Network, NetworkArgs
from infra.shared.registry import Registry, RegistryArgs


@dataclass(frozen=True)
class Foundation:
    """The shared components; `images` maps each service name to its image."""

    network: Network
    registry: Registry
    images: dict[str, ModelImage]
    cache: Cache
    candidates: dict[str, ModelImage] = dataclasses.field(default_factory=dict)

    def image_ref(self, service: str) -> pulumi.Output[str]:
        """`repo:tag@sha256:...` of one service's image."""
        return self.images[service].ref

    def candidate_image_ref(self, service: str) -> pulumi.Output[str] | None:
        """`repo:tag@sha256:...` of one service's candidate image; None when it has no candidate."""
        image = self.candidates.get(service)
        return image.ref if image is not None else None


def build_foundation(cfg: StackConfig) -> Foundation:
    """Declare the network, registry, images and cache of a stack."""
    tags = cfg.tags()
    network = Network("network", NetworkArgs(settings=cfg.network, tags=tags))
    registry = Registry(
        "registry", RegistryArgs(repository_name=cfg.prefix, keep_images=cfg.image.keep_images, tags=tags)
    )
    source_hash = context_hash(Path(cfg.image.context), Path(cfg.image.dockerfile))
    images = {
        svc.name: ModelImage(
            f"image-{svc.name}",
            ModelImageArgs(
                service=svc,
                repository_url=registry.repository_url,
                registry_id=registry.registry_id,
                context=cfg.image.context,
                dockerfile=cfg.image.dockerfile,
                source_hash=source_hash,
                build_on_preview=cfg.image.build_on_preview,
            ),
        )
        for svc in cfg.services
    }
    # The candidate is built like a service of its own named `<name>-candidate`, so its tag never collides with
    # the tag the service's own image gets once the candidate is promoted into modelId/modelRevision.
    candidates = {
        svc.name: ModelImage(
            f"image-{svc.name}-candidate",
            ModelImageArgs(
                service=dataclasses.replace(svc, name=f"{svc.name}-candidate", model_id=svc.candidate.model_id,
                                            model_revision=svc.candidate.model_revision, candidate=None),
                repository_url=registry.repository_url,
                registry_id=registry.registry_id,
                context=cfg.image.context,
                dockerfile=cfg.image.dockerfile,
                source_hash=source_hash,
                build_on_preview=cfg.image.build_on_preview,
            ),
        )
        for svc in cfg.services
        if svc.candidate is not None
    }
    cache = Cache(
        "cache",
        CacheArgs(
            settings=cfg.cache,
            vpc_id=network.vpc_id,
            subnet_ids=network.private_subnet_ids,
            name_prefix=cfg.prefix,
            tags=tags,
        ),
    )
    return Foundation(network=network, registry=registry, images=images, cache=cache, candidates=candidates)
