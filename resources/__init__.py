"""Who the pipeline talks to: BuildKit builders, OCI registries/ECR, Kubernetes, git, and the SOCI engine."""
