"""OCI distribution client: `from resources.registry import RegistryClient` is the public entry point.

Parts: `client` (RegistryClient), `transport` (HTTP, auth), `retry` (the one retry and deadline policy),
`manifests`, `blobs` (reads), `uploads` (writes), `referrers`, `errors` (exceptions, `redact`), `auth`,
`docker_config`. Descriptor and RawManifest (exported here as `Manifest` too) live in `resources.oci.manifest`.
The retry and deadline policy is described in docs/registry-client.md.
"""

from resources.oci.manifest import Descriptor, RawManifest
from resources.oci.media_types import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
)
from resources.registry.client import RegistryClient
from resources.registry.errors import (
    DigestMismatchError,
    RegistryAuthError,
    RegistryDeadlineError,
    RegistryError,
    RegistryNotFoundError,
    RegistryUnavailableError,
    SourceReadError,
    redact,
)
from resources.registry.referrers import is_referrers_tag, referrer_descriptor, referrers_tag

Manifest = RawManifest  # the name callers used before the Go-exact types and this one moved to resources.oci.manifest

__all__ = [
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "MANIFEST_MEDIA_TYPES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Descriptor",
    "DigestMismatchError",
    "Manifest",
    "RawManifest",
    "RegistryAuthError",
    "RegistryClient",
    "RegistryDeadlineError",
    "RegistryError",
    "RegistryNotFoundError",
    "RegistryUnavailableError",
    "SourceReadError",
    "is_referrers_tag",
    "redact",
    "referrer_descriptor",
    "referrers_tag",
]
