"""deploy/k8s/make-certs.sh makes certificates that really work for buildkitd <-> buildctl mTLS."""

from __future__ import annotations

import socket
import ssl
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from resources import defaults
from resources.builders.tls import SECRET_KEY_SETS
from tests.deploy.conftest import K8S

SCRIPT = K8S / "make-certs.sh"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("certs") / "certs"
    result = subprocess.run(["bash", str(SCRIPT), "-o", str(out), "-d", "30", "127.0.0.1"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return out, result.stdout


@pytest.fixture(scope="module")
def certs(run) -> Path:
    return run[0]


def test_printed_commands_create_the_secrets_the_manifests_and_code_use(run):
    out, stdout = run
    for secret, side in (
        (defaults.BUILDER_DAEMON_TLS_SECRET, "daemon"),
        (defaults.BUILDER_CLIENT_TLS_SECRET, "client"),
    ):
        assert (f"kubectl -n {defaults.BUILDER_NAMESPACE} create secret generic {secret} --from-file={out}/{side}"
                in stdout), secret
    assert (
        f"kubectl -n {defaults.DAGSTER_NAMESPACE} create secret generic {defaults.BUILDER_CLIENT_TLS_SECRET}" in stdout
    )
    assert "BEGIN" not in stdout, "key material must never be printed"


def _handshake(certs: Path, *, server_side: str = "daemon", client_cert: bool = True, server_name: str,
               check_hostname: bool = True) -> str | None:
    """None when a TLS 1.2+ handshake with client auth succeeds over a loopback socket, else the error."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs / server_side / "cert.pem", certs / server_side / "key.pem")
    server_ctx.load_verify_locations(certs / "daemon" / "ca.pem")
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=certs / "client" / "ca.pem")
    client_ctx.check_hostname = check_hostname
    if client_cert:
        client_ctx.load_cert_chain(certs / "client" / "cert.pem", certs / "client" / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    server_error: list[BaseException] = []

    def serve() -> None:
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
                tls.recv(1)
        except (ssl.SSLError, OSError) as exc:
            server_error.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=server_name) as tls:
                data = tls.recv(2)
                if data != b"ok":
                    return "server closed the connection (client certificate rejected)"
                tls.sendall(b".")
    except (ssl.SSLError, OSError) as exc:
        return f"client: {exc}"
    finally:
        thread.join(10)
        listener.close()
    return f"server: {server_error[0]}" if server_error else None


def test_files_use_the_key_names_tls_py_reads_and_keys_are_private(certs):
    for side in ("daemon", "client"):
        assert sorted(p.name for p in (certs / side).iterdir()) == sorted(SECRET_KEY_SETS[0])
        assert stat.S_IMODE((certs / side / "key.pem").stat().st_mode) == 0o600
    assert not list(certs.glob("**/*ca-key*")), "the CA private key must not be left behind"


@pytest.mark.parametrize("server_name", [
    defaults.BUILDER_TLS_SERVER_NAME,
    f"{defaults.BUILDER_STATEFULSET}-1.{defaults.BUILDER_SERVICE}.{defaults.BUILDER_NAMESPACE}.svc",
    f"{defaults.BUILDER_STATEFULSET}-0.{defaults.BUILDER_SERVICE}.{defaults.BUILDER_NAMESPACE}.svc.cluster.local",
    "127.0.0.1",
])
def test_mutual_tls_handshake_succeeds_for_every_name_buildctl_dials(certs, server_name):
    assert _handshake(certs, server_name=server_name) is None


def test_a_client_without_certificate_is_refused(certs):
    assert _handshake(certs, client_cert=False, server_name=defaults.BUILDER_TLS_SERVER_NAME) is not None


def test_a_wrong_server_name_is_refused(certs):
    error = _handshake(certs, server_name="buildkitd.other-namespace.svc")
    assert error is not None and "match" in error.lower()


def test_the_client_certificate_cannot_serve(certs):
    """extendedKeyUsage keeps the two certificates in their roles (hostname checks off to isolate it)."""
    error = _handshake(certs, server_side="client", server_name="streamable-dagster", check_hostname=False)
    assert error is not None and "purpose" in error.lower()
