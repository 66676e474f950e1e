"""ECR push events (EventBridge -> SQS): index images as they are pushed."""
