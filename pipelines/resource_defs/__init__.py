"""Every ConfigurableResource of the code location, and the set each environment uses.

base.py (shared bases), local.py (the local stack), eks.py (EKS: ECR, builder pool, canary, S3 IO),
git.py (git remotes for the push sensor), backfill.py (SOCI backfill), sqs.py (ECR push events).
"""

import dagster as dg

from pipelines.resource_defs.backfill import SociBackfillResource
from pipelines.resource_defs.base import TargetsResource, secret_env
from pipelines.resource_defs.eks import EcrResource, eks_resources
from pipelines.resource_defs.git import GitRemotesResource
from pipelines.resource_defs.local import local_resources, workspace_resource
from pipelines.resource_defs.sqs import SqsQueueResource
from pipelines.settings import Settings


def automation_resources(settings: Settings, ecr: EcrResource | None) -> dict[str, dg.ConfigurableResource]:
    """Resources of the sensors and the backfill: git remotes, backfill filters, and the SQS queue when set."""
    resources: dict[str, dg.ConfigurableResource] = {
        "git": GitRemotesResource(cache_dir=f"{settings.state_root}/git-watch", username=settings.git_username,
                                  password=secret_env("STREAMABLE_GIT_PASSWORD", settings.git_password_set)),
        "soci_backfill": SociBackfillResource(registry=settings.backfill_registry, default_registry=settings.registry,
                                              filters=settings.soci_filter_list,
                                              catalog="ecr" if ecr is not None else "registry", ecr=ecr),
    }
    if settings.push_queue_url:
        resources["sqs"] = SqsQueueResource(queue_url=settings.push_queue_url, region_name=settings.aws_region)
    return resources


def resources_for(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    """All resources for STREAMABLE_ENV (local | eks); a SettingError names a missing or bad variable."""
    if settings.env == "eks":
        env: dict[str, dg.ConfigurableResource] = {
            "targets": TargetsResource(path=settings.targets),
            "workspace": workspace_resource(settings),
            **eks_resources(settings),
        }
        ecr = env["ecr"]
        assert isinstance(ecr, EcrResource)
    else:
        env, ecr = local_resources(settings), None
    return {**env, **automation_resources(settings, ecr)}
