"""What both platforms stand on: the VPC, the ECR repository, one image per model service, and Redis."""

from __future__ import annotations

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

    def image_ref(self, service: str) -> pulumi.Output[str]:
        """`repo:tag@sha256:...` of one service's image."""
        return self.images[service].ref


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
    return Foundation(network=network, registry=registry, images=images, cache=cache)
