#!/bin/sh
# Readiness of a builder pod: buildkitd must not only answer (`buildctl debug workers` does as soon as the
# daemon is up) but be able to build. A containerd worker whose snapshotter is not loaded lists its worker
# normally and fails every build with "snapshotter not loaded"
# (tests/fakes/buildctl_transcripts/v0.23.2/debug-workers-soci-json and build-soci-snapshotter-missing).
# So the probe runs a tiny build (FROM scratch + COPY of one file, no --output: the result stays in the
# local cache) through the worker's snapshotter, and the pod is Ready only when that build succeeds.
# buildctl's output (the failing step and its error) becomes the probe's output, shown in pod events.
set -eu
addr="${BUILDKIT_READY_ADDR:-unix:///run/buildkit/buildkitd.sock}"
context="${BUILDKIT_READY_CONTEXT:-/etc/buildkit/ready-probe}"
exec buildctl --addr "$addr" build --frontend dockerfile.v0 --progress plain \
  --local "context=$context" --local "dockerfile=$context"
