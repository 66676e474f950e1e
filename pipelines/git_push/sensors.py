"""The git push sensor: one poll of every target's remote per tick, one build run per changed target."""

import dagster as dg

from pipelines.resource_defs.base import TargetsResource
from pipelines.resource_defs.git import GitRemotesResource
from pipelines.supply_chain.jobs import BUILD_JOB, BUILD_OP

GIT_SENSOR = "git_push_sensor"


@dg.sensor(
    name=GIT_SENSOR,
    job_name=BUILD_JOB,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Polls the targets' git remotes and builds exactly the targets whose context changed.",
)
def git_push_sensor(context: dg.SensorEvaluationContext, targets: TargetsResource,
                    git: GitRemotesResource) -> dg.SensorResult:
    """One poll of every remote; run_key `<target>@<sha>` (other refs than the default branch add `@<ref>`)."""
    result = git.poller().poll(targets.load().targets, context.cursor, budget_s=git.tick_budget_s)
    for failure in result.failures:
        context.log.warning(f"git remote not polled: {failure.error}")
    runs = []
    for t in result.triggers:
        context.log.info(f"{t.target}: {t.ref} at {t.commit[:12]} ({t.reason})")
        runs.append(dg.RunRequest(
            partition_key=t.target,
            run_key=t.run_key,
            run_config={"ops": {BUILD_OP: {"config": {"commit": t.commit, "ref": t.ref}}}},
            tags={"streamable/commit": t.commit, "streamable/ref": t.ref, "streamable/trigger": "git-push"},
        ))
    return dg.SensorResult(run_requests=runs, cursor=result.cursor, skip_reason=None if runs else result.summary())
