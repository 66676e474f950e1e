"""A JSON document kept in the registry as a tagged OCI artifact, updated read-merge-write.

Why the registry (and not Dagster's storage): the sensor daemon, every run pod and the CLI already hold
credentials for it (ECR: the pod's IAM role), so the document is shared across pods and deployments with
no new permission or database; and it sits next to the blobs it describes. Everything stored this way is
a cache that is checked before use, so a lost concurrent update costs work, never correctness.

Layout: manifest (OCI image manifest, `artifactType` = the document type, `{}` config) -> one layer, the
document as gzip-compressed JSON. `save` pushes blob and manifest by digest, then moves the tag only if it
still points at what was read (else it reloads, merges again and retries): read-merge-write with an
optimistic check. Registries have no compare-and-swap, so two writers within the same few milliseconds may
still lose one update; the next writer's merge brings missing entries back.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from resources.errors import StreamableError
from resources.oci import media_types as mt
from resources.registry import RegistryClient, RegistryError, RegistryNotFoundError

log = logging.getLogger(__name__)

Doc = dict[str, Any]
Merge = Callable[[Doc, Doc], Doc]
"""(document in the registry now, our document) -> what to write."""

SAVE_ATTEMPTS = 5
OCI_EMPTY = "application/vnd.oci.empty.v1+json"


class ArtifactStoreError(StreamableError):
    """The stored document cannot be read or written; the message names repository and tag."""


@dataclass
class Loaded:
    """A document and the manifest digest it was read from (None when there was none)."""

    doc: Doc
    manifest_digest: str | None


class JsonArtifactStore:
    """One JSON document at `repository:tag` of the client's registry."""

    def __init__(self, client: RegistryClient, repository: str, tag: str, artifact_type: str) -> None:
        self.client = client
        self.repository = repository
        self.tag = tag
        self.artifact_type = artifact_type
        self.layer_media_type = artifact_type.removesuffix("+json") + "+json+gzip" if artifact_type.endswith("+json") \
            else artifact_type + "+gzip"

    @property
    def where(self) -> str:
        return f"{self.client.registry}/{self.repository}:{self.tag}"

    def load(self) -> Loaded:
        """The document (empty when the tag does not exist yet)."""
        try:
            raw = self.client.get_manifest(self.repository, self.tag)
        except RegistryNotFoundError:
            return Loaded({}, None)
        try:
            manifest = json.loads(raw.data)
            layers = manifest.get("layers") or []
            if manifest.get("artifactType") != self.artifact_type or len(layers) != 1:
                raise ArtifactStoreError(f"{self.where} ({raw.digest}) is not a {self.artifact_type} document")
            blob = self.client.get_blob(self.repository, layers[0]["digest"])
            doc = json.loads(gzip.decompress(blob))
        except (ValueError, KeyError, TypeError, OSError) as exc:
            raise ArtifactStoreError(f"{self.where} ({raw.digest}): cannot read the document: {exc}") from None
        if not isinstance(doc, dict):
            raise ArtifactStoreError(f"{self.where} ({raw.digest}): the document is not a JSON object")
        return Loaded(doc, raw.digest)

    def _current_digest(self) -> str | None:
        head = self.client.head_manifest(self.repository, self.tag)
        return head.digest if head is not None else None

    def save(self, doc: Doc, read_from: str | None, merge: Merge) -> Loaded:
        """Write `doc` (merged into what is stored now, if that changed since `read_from`); returns what was written."""
        base = read_from
        for _ in range(SAVE_ATTEMPTS):
            current = self._current_digest()
            if current != base:
                fresh = self.load()
                doc, base = merge(fresh.doc, doc), fresh.manifest_digest
                continue
            digest = self._push(doc)
            if self._current_digest() != base:  # someone wrote meanwhile: merge again
                continue
            self.client.put_manifest(self.repository, self.tag, self._manifest_bytes, mt.OCI_MANIFEST)
            return Loaded(doc, digest)
        raise ArtifactStoreError(f"{self.where}: gave up after {SAVE_ATTEMPTS} concurrent updates")

    def _push(self, doc: Doc) -> str:
        blob = gzip.compress(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode(), compresslevel=6, mtime=0)
        try:
            layer = self.client.push_blob(self.repository, blob)
            self.client.push_blob(self.repository, mt.EMPTY_CONFIG, digest=mt.EMPTY_CONFIG_DIGEST)
            manifest = {
                "schemaVersion": 2, "mediaType": mt.OCI_MANIFEST, "artifactType": self.artifact_type,
                "config": {"mediaType": OCI_EMPTY, "digest": mt.EMPTY_CONFIG_DIGEST,
                           "size": len(mt.EMPTY_CONFIG)},
                "layers": [{"mediaType": self.layer_media_type, "digest": layer.digest, "size": layer.size}],
            }
            self._manifest_bytes = json.dumps(manifest, separators=(",", ":")).encode()
            return self.client.put_manifest(self.repository, _digest_ref(self._manifest_bytes), self._manifest_bytes,
                                            mt.OCI_MANIFEST)
        except RegistryError as exc:
            raise ArtifactStoreError(f"{self.where}: cannot write the document: {exc}") from exc


def _digest_ref(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()
