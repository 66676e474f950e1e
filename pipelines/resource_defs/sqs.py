"""The SQS queue of ECR push events (EventBridge "ECR Image Action" -> SQS)."""

from __future__ import annotations

from typing import Any

import boto3
from dagster_aws.utils import ResourceWithBoto3Configuration, construct_boto_client_retry_config
from pydantic import Field


class SqsQueueResource(ResourceWithBoto3Configuration):
    """The SQS queue an EventBridge rule fills with ECR "ECR Image Action" events."""

    queue_url: str = Field(description="https://sqs.<region>.amazonaws.com/<account>/<queue>")
    aws_secret_access_key: str | None = Field(default=None, repr=False, description="pass as dg.EnvVar")
    aws_session_token: str | None = Field(default=None, repr=False, description="pass as dg.EnvVar")
    wait_time_s: int = Field(default=1, ge=0, le=20, description="long-poll wait of the first receive")
    max_messages_per_tick: int = Field(default=100, ge=1)
    visibility_timeout_s: int | None = Field(default=300, ge=1, description="how long received messages stay hidden")

    def client(self) -> Any:
        """A boto3 SQS client from the dagster-aws fields."""
        session = boto3.session.Session(profile_name=self.profile_name)
        return session.client(
            "sqs", region_name=self.region_name, use_ssl=self.use_ssl, verify=self.verify,
            endpoint_url=self.endpoint_url, aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key, aws_session_token=self.aws_session_token,
            config=construct_boto_client_retry_config(self.max_attempts),
        )
