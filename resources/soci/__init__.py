"""SOCI (Seekable OCI) index building: zTOCs, the index manifest, and the SOCI-enabled image."""
