"""BuildKit builders: the local Docker engine's embedded BuildKit and remote buildkitd pods via buildctl."""
