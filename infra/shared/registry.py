"""The stack's ECR repository: where the model images are pushed and pulled from by digest.

Tags are immutable so a tag always names the same bytes, except the `*-buildcache` tags that BuildKit overwrites
on every build. A lifecycle policy bounds storage, and `force_delete` lets `pulumi destroy` remove a repository
that still holds images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

BUILD_CACHE_SUFFIX = "buildcache"


@dataclass(frozen=True)
class RegistryArgs:
    """Repository name, how many images to keep, and tags."""

    repository_name: str
    keep_images: int
    tags: dict[str, str]


def lifecycle_policy(keep_images: int) -> str:
    """ECR lifecycle rules: drop untagged images after a day, then keep only the newest `keep_images`.

    The `any` rule must carry the highest priority number (ECR lifecycle policy reference, "tagStatus any").
    """
    return json.dumps(
        {
            "rules": [
                {
                    "rulePriority": 1,
                    "description": "Expire untagged images (superseded manifests and cache layers)",
                    "selection": {
                        "tagStatus": "untagged",
                        "countType": "sinceImagePushed",
                        "countUnit": "days",
                        "countNumber": 1,
                    },
                    "action": {"type": "expire"},
                },
                {
                    "rulePriority": 2,
                    "description": f"Keep the last {keep_images} images",
                    "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep_images},
                    "action": {"type": "expire"},
                },
            ]
        },
        sort_keys=True,
    )


class Registry(pulumi.ComponentResource):
    """One ECR repository with scan on push, immutable tags and a lifecycle policy."""

    repository_url: pulumi.Output[str]
    registry_id: pulumi.Output[str]

    def __init__(self, name: str, args: RegistryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:registry:Registry", name, None, opts)
        repo = aws.ecr.Repository(
            f"{name}-repository",
            name=args.repository_name,
            image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
            image_tag_mutability="IMMUTABLE_WITH_EXCLUSION",
            image_tag_mutability_exclusion_filters=[
                aws.ecr.RepositoryImageTagMutabilityExclusionFilterArgs(
                    filter=f"*-{BUILD_CACHE_SUFFIX}", filter_type="WILDCARD"
                )
            ],
            encryption_configurations=[aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="KMS")],
            force_delete=True,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        aws.ecr.LifecyclePolicy(
            f"{name}-lifecycle",
            repository=repo.name,
            policy=lifecycle_policy(args.keep_images),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.repository_url = repo.repository_url
        self.registry_id = repo.registry_id
        self.register_outputs({"repository_url": self.repository_url, "registry_id": self.registry_id})
