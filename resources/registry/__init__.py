"""OCI distribution client: `from resources.registry import RegistryClient` is the public entry point."""

from resources.registry.client import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    DigestMismatchError,
    Manifest,
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    RegistryNotFoundError,
    RegistryUnavailableError,
    is_referrers_tag,
    referrer_descriptor,
    referrers_tag,
)

__all__ = [
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "MANIFEST_MEDIA_TYPES",
    "OCI_INDEX",
    "OCI_MANIFEST",
    "Descriptor",
    "DigestMismatchError",
    "Manifest",
    "RegistryAuthError",
    "RegistryClient",
    "RegistryError",
    "RegistryNotFoundError",
    "RegistryUnavailableError",
    "is_referrers_tag",
    "referrer_descriptor",
    "referrers_tag",
]
