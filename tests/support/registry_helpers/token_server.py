"""A real token-auth setup: a JWT token server (ES256, x5c) and a distribution registry that trusts its certificate."""

from __future__ import annotations

import base64
import datetime as dt
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import RunningRegistry, free_port

SERVICE = "streamable-test-registry"
ISSUER = "streamable-test-issuer"


@dataclass
class TokenRequest:
    """What the token server was asked: the user (None when anonymous), scopes and grant type."""

    user: str | None
    scopes: list[str]
    grant: str


@dataclass
class TokenServer:
    """Issues JWTs distribution accepts: users get what they ask for, anonymous callers only `pull`."""

    users: dict[str, str]
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # identity token -> user
    expires_in: int = 300
    requests: list[TokenRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "streamable test token issuer")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, user: str | None, scopes: list[str], grant: str) -> None:
                server.requests.append(TokenRequest(user, scopes, grant))
                token = server.issue(user, scopes)
                body = json.dumps({"token": token, "access_token": token, "expires_in": server.expires_in}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _deny(self) -> None:
                self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                scopes = [s for value in query.get("scope", []) for s in value.split()]
                header = self.headers.get("Authorization")
                user = None
                if header:
                    if not header.startswith("Basic "):
                        return self._deny()
                    name, _, password = base64.b64decode(header[6:]).decode().partition(":")
                    if server.users.get(name) != password:
                        return self._deny()
                    user = name
                self._answer(user, scopes, "basic" if user else "anonymous")

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                user = server.refresh_tokens.get(form.get("refresh_token", [""])[0])
                if form.get("grant_type") != ["refresh_token"] or user is None:
                    return self._deny()
                self._answer(user, " ".join(form.get("scope", [])).split(), "refresh_token")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def issue(self, user: str | None, scopes: list[str]) -> str:
        """A signed token granting the scopes (anonymous: pull actions only)."""
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            granted = actions.split(",") if user else [a for a in actions.split(",") if a == "pull"]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user or "", "aud": SERVICE, "exp": now + self.expires_in,
                  "nbf": now - 10, "iat": now, "jti": uuid.uuid4().hex, "access": access}
        der = self.cert.public_bytes(serialization.Encoding.DER)
        return jwt.encode(claims, self.key, algorithm="ES256", headers={"x5c": [base64.b64encode(der).decode()]})

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_token_registry(root: Path, tokens: TokenServer) -> RunningRegistry:
    """A distribution registry with `auth: token` trusting the token server's certificate."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "token-ca.pem").write_bytes(tokens.cert_pem())
    addr = f"127.0.0.1:{free_port()}"
    (root / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: warn\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: {addr}\n"
        f"auth:\n  token:\n    realm: {tokens.realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n"
        f"    rootcertbundle: {root / 'token-ca.pem'}\n"
    )
    reg = RunningRegistry(addr=addr, root=root)
    reg.start()
    return reg
