"""Names shared by the Python resources and the manifests in deploy/ (tests check they agree)."""

from __future__ import annotations

# Builder pool (deploy/k8s: StatefulSet + headless Service running buildkitd).
BUILDER_NAMESPACE = "streamable-builders"
BUILDER_STATEFULSET = "buildkitd"
BUILDER_SERVICE = "buildkitd"
BUILDER_PORT = 1234
BUILDER_APP_LABEL = "buildkitd"
BUILDER_DAEMON_TLS_SECRET = "buildkit-daemon-certs"
BUILDER_CLIENT_TLS_SECRET = "buildkit-client-certs"
BUILDER_TLS_SERVER_NAME = "buildkitd"

# Dagster in the cluster.
DAGSTER_NAMESPACE = "dagster"
DAGSTER_SERVICE_ACCOUNT = "streamable-dagster"
DAGSTER_APP_LABEL = "dagster"

# Canary pods on SOCI nodes.
CANARY_NAMESPACE = "streamable-canary"
SOCI_NODE_LABEL_KEY = "streamable.dev/soci"
SOCI_NODE_LABEL_VALUE = "true"
SOCI_NODE_TAINT_KEY = "streamable.dev/soci"
SOCI_NODE_TAINT_VALUE = "true"
SOCI_NODE_TAINT_EFFECT = "NoSchedule"

# Dagster concurrency pool that every build goes through.
BUILD_POOL = "buildkit"
SOCI_POOL = "soci"

# SOCI defaults (docs/soci-format.md section 2).
SOCI_SPAN_SIZE = 4 * 1024 * 1024
SOCI_MIN_LAYER_SIZE = 10 * 1024 * 1024
SOCI_BUILD_TOOL_IDENTIFIER = "streamable"
SOCI_TAG_SUFFIX = "-soci"
