"""mTLS material for buildctl: client cert, key and CA from files or a Kubernetes secret, in a private temp dir."""

from __future__ import annotations

import base64
import binascii
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException

from resources.defaults import BUILDER_CLIENT_TLS_SECRET, BUILDER_NAMESPACE, BUILDER_TLS_SERVER_NAME
from resources.errors import StreamableError
from resources.k8s.client import api_error

# Key names in the secret, tried in order: moby/buildkit examples/kubernetes/create-certs.sh, then kubernetes.io/tls.
SECRET_KEY_SETS = (("ca.pem", "cert.pem", "key.pem"), ("ca.crt", "tls.crt", "tls.key"))


class TlsError(StreamableError, RuntimeError):
    """TLS material is missing or unreadable; names the file or secret and key, never the content."""


@dataclass(frozen=True)
class TlsFiles:
    """Paths buildctl reads: CA bundle, client certificate and key, and the expected server name."""

    ca_cert: Path
    cert: Path
    key: Path
    server_name: str | None = None

    def argv(self) -> list[str]:
        """Global buildctl flags for these files (paths only; contents never go into argv)."""
        args = ["--tlscacert", str(self.ca_cert), "--tlscert", str(self.cert), "--tlskey", str(self.key)]
        if self.server_name:
            args += ["--tlsservername", self.server_name]
        return args


class TlsSource(Protocol):
    """Something that can put TLS files on disk for the duration of one buildctl call."""

    def materialize(self) -> Any:
        """Context manager yielding TlsFiles; files it created are removed on exit."""
        ...


@dataclass(frozen=True)
class TlsFromFiles:
    """TLS files already on disk (e.g. a mounted secret volume); used in place, never copied or removed."""

    ca_cert: Path
    cert: Path
    key: Path
    server_name: str | None = BUILDER_TLS_SERVER_NAME

    @contextmanager
    def materialize(self) -> Iterator[TlsFiles]:
        """Check the files exist and yield them."""
        for label, path in (
            ("CA certificate", self.ca_cert),
            ("client certificate", self.cert),
            ("client key", self.key),
        ):
            if not Path(path).is_file():
                raise TlsError(f"buildkit TLS {label} {path} does not exist or is not a file")
        yield TlsFiles(Path(self.ca_cert), Path(self.cert), Path(self.key), self.server_name)


@dataclass(frozen=True)
class TlsFromSecret:
    """TLS files from a Kubernetes secret, written to a 0700 temp dir (files 0600) and removed afterwards."""

    core_api: Any
    """kubernetes.client.CoreV1Api"""
    secret_name: str = BUILDER_CLIENT_TLS_SECRET
    namespace: str = BUILDER_NAMESPACE
    server_name: str | None = BUILDER_TLS_SERVER_NAME

    def __repr__(self) -> str:
        return f"TlsFromSecret(secret={self.namespace}/{self.secret_name}, server_name={self.server_name!r})"

    def _read(self) -> tuple[bytes, bytes, bytes]:
        """(ca, cert, key) bytes from the secret; errors name the secret and the missing keys."""
        what = f"secret {self.namespace}/{self.secret_name}"
        try:
            # Raw response: with preloaded content the client logs every response body at DEBUG level (the key).
            response = self.core_api.read_namespaced_secret(self.secret_name, self.namespace, _preload_content=False)
        except ApiException as exc:
            raise TlsError(str(api_error(exc, what))) from None
        try:
            data = json.loads(response.data).get("data") or {}
        except (ValueError, AttributeError):
            raise TlsError(f"{what}: the Kubernetes API answered with something that is not a Secret") from None
        finally:
            response.release_conn()
        for names in SECRET_KEY_SETS:
            if all(n in data for n in names):
                out = []
                for n in names:
                    try:
                        out.append(base64.b64decode(data[n], validate=True))
                    except (binascii.Error, ValueError):
                        raise TlsError(f"{what}: key {n!r} is not valid base64") from None
                return out[0], out[1], out[2]
        wanted = " or ".join("/".join(names) for names in SECRET_KEY_SETS)
        present = ", ".join(sorted(data)) or "none"
        raise TlsError(f"{what} must hold keys {wanted}; it has: {present}")

    @contextmanager
    def materialize(self) -> Iterator[TlsFiles]:
        """Write the secret's files to a private temp dir, yield their paths, remove the dir on exit."""
        ca, cert, key = self._read()
        tmp = Path(tempfile.mkdtemp(prefix="streamable-buildkit-tls-"))
        try:
            os.chmod(tmp, 0o700)
            paths = []
            for name, content in (("ca.pem", ca), ("cert.pem", cert), ("key.pem", key)):
                path = tmp / name
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(content)
                paths.append(path)
            yield TlsFiles(paths[0], paths[1], paths[2], self.server_name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

