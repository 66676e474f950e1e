"""A loopback reverse proxy in front of a real registry that injects scripted faults, and a tiny object store."""

from __future__ import annotations

import http.client
import json
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}


@dataclass
class Fault:
    """What to do with the next `times` requests matching method + path regex.

    kind: "status" (answer `status` without forwarding), "forward_then_status" (forward, then answer `status`
    as if the answer was lost), "truncate" (forward, send half the body and drop the connection),
    "redirect_to_store" (fetch from upstream, answer 307 to the object store), "redirect" (307 to `location`),
    "ignore_range" (forward without the Range header), "paginate_tags" (serve `tags/list` in pages of `?n=`
    with `Link` headers per the OCI spec, from the upstream's full list: distribution 2.8 ignores `n` for tags),
    "drip" (forward, then send the body one byte every `delay` seconds), "reset_mid_body" (forward, send half the
    body, then reset the connection), "endless" (forward, then the body over and over without end, no
    Content-Length: a gzip layer stays valid gzip), "wrong_length" (forward, announce Content-Length + `extra`,
    send the body, close), "forward_then_reset" (forward, then reset the connection unanswered: a lost response),
    "delay" (forward, then hold the answer `delay` seconds: a slow reader acting on what was true when it asked),
    "partial_patch" (forward only the first half of a PATCH body: the registry's 202 Range says how much it
    holds), "echo_auth" (answer `status` with an error message quoting the Authorization header).
    `status` answers carry `body` when given and `header_list` (repeatable headers) besides `headers`.
    """

    path: str
    kind: str = "status"
    method: str | None = None
    status: int = 503
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    location: str = ""
    delay: float = 0.0
    body: bytes | None = None
    header_list: list[tuple[str, str]] = field(default_factory=list)
    extra: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (
            self.times > 0 and (self.method is None or self.method == method) and re.search(self.path, path) is not None
        )


@dataclass
class Seen:
    """One request as the proxy or store received it."""

    method: str
    path: str
    headers: dict[str, str]


class ObjectStore:
    """A loopback HTTP server serving stored bytes at /obj/<key> (stands in for S3 behind a registry redirect)."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.seen: list[Seen] = []
        store = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _serve(self, with_body: bool) -> None:
                store.seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                key = self.path.split("?", 1)[0].removeprefix("/obj/")
                data = store.objects.get(key)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, body = 200, data
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
                if m:  # like S3: honor a single byte range
                    start = int(m.group(1))
                    end = min(int(m.group(2)) + 1 if m.group(2) else len(data), len(data))
                    status, body = 206, data[start:end]
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Content-Type", "application/octet-stream")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
                self.end_headers()
                if with_body:
                    self.wfile.write(body)

            def do_GET(self) -> None:
                self._serve(True)

            def do_HEAD(self) -> None:
                self._serve(False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.addr = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def put(self, data: bytes) -> str:
        key = uuid.uuid4().hex
        self.objects[key] = data
        return f"http://{self.addr}/obj/{key}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class FaultProxy:
    """Reverse proxy on loopback forwarding to `upstream` (host:port) except where a Fault says otherwise."""

    def __init__(self, upstream: str, store: ObjectStore | None = None) -> None:
        self.upstream = upstream
        self.faults: list[Fault] = []
        self.seen: list[Seen] = []
        self.store = store
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def handle_one_request(self) -> None:
                try:
                    super().handle_one_request()
                except ConnectionError:
                    self.close_connection = True

            def _body(self) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _forward(self, body: bytes, drop: tuple[str, ...] = ()) -> tuple[int, list[tuple[str, str]], bytes]:
                conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | set(drop)}
                conn.request(self.command, self.path, body=body or None, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                out = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
                conn.close()
                return resp.status, out, data

            def _reply(
                self, status: int, headers: list[tuple[str, str]], data: bytes, *, truncate: bool = False
            ) -> None:
                self.send_response(status)
                has_length = False
                for k, v in headers:
                    if k.lower() == "content-length":
                        has_length = True
                    self.send_header(k, v)
                if not has_length:
                    self.send_header("Content-Length", str(len(data)))
                if truncate:
                    self.send_header("Connection", "close")
                self.end_headers()
                if self.command == "HEAD":
                    return
                if truncate:
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

            def _handle(self) -> None:
                body = self._body()
                proxy.seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
                fault = None
                with proxy._lock:
                    for f in proxy.faults:
                        if f.matches(self.command, self.path):
                            f.times -= 1
                            fault = f
                            break
                if fault is None:
                    self._reply(*self._forward(body))
                elif fault.kind == "status":
                    body = (
                        fault.body
                        if fault.body is not None
                        else b'{"errors":[{"code":"UNAVAILABLE","message":"injected"}]}'
                    )
                    self._reply(fault.status, [*fault.headers.items(), *fault.header_list], body)
                elif fault.kind == "echo_auth":
                    echoed = self.headers.get("Authorization", "")
                    message = f"request with Authorization: {echoed} refused; token={echoed.split(' ')[-1]}"
                    data = json.dumps({"errors": [{"code": "DENIED", "message": message}]}).encode()
                    self._reply(fault.status, [("Content-Type", "application/json")], data)
                elif fault.kind == "delay":
                    answer = self._forward(body)
                    time.sleep(fault.delay)
                    self._reply(*answer)
                elif fault.kind in ("drip", "reset_mid_body", "endless", "wrong_length"):
                    self._misbehave(fault, *self._forward(body))
                elif fault.kind == "partial_patch":
                    start = int(self.headers.get("Content-Range", "0-0").split("-", 1)[0])
                    half = body[: len(body) // 2]
                    del self.headers["Content-Range"]
                    self.headers["Content-Range"] = f"{start}-{start + len(half) - 1}"
                    del self.headers["Content-Length"]
                    self.headers["Content-Length"] = str(len(half))
                    self._reply(*self._forward(half))
                elif fault.kind == "forward_then_reset":
                    self._forward(body)
                    self._reset()
                elif fault.kind == "forward_then_status":
                    self._forward(body)
                    self._reply(fault.status, list(fault.headers.items()), b"")
                elif fault.kind == "truncate":
                    self._reply(*self._forward(body), truncate=True)
                elif fault.kind == "ignore_range":
                    self._reply(*self._forward(body, drop=("range",)))
                elif fault.kind == "redirect":
                    self._reply(307, [("Location", fault.location)], b"")
                elif fault.kind == "redirect_to_store":
                    assert proxy.store is not None
                    status, headers, data = self._forward(body, drop=("range",))
                    if status != 200:
                        self._reply(status, headers, data)
                    else:
                        self._reply(307, [("Location", proxy.store.put(data))], b"")
                elif fault.kind == "paginate_tags":
                    self._paginate_tags(body)
                else:
                    raise AssertionError(f"unknown fault kind {fault.kind}")

            def _reset(self) -> None:
                """Drop the connection with a TCP reset (SO_LINGER 0)."""
                self.wfile.flush()
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()
                self.close_connection = True

            def _misbehave(self, fault: Fault, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                kept = [(k, v) for k, v in headers if k.lower() != "content-length"]
                self.send_response(status)
                for k, v in kept:
                    self.send_header(k, v)
                if fault.kind == "endless":
                    self.send_header("Connection", "close")
                elif fault.kind == "wrong_length":
                    self.send_header("Content-Length", str(max(0, len(data) + fault.extra)))
                    self.send_header("Connection", "close")
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.close_connection = True
                try:
                    if fault.kind == "drip":
                        for i in range(len(data)):
                            self.wfile.write(data[i : i + 1])
                            self.wfile.flush()
                            time.sleep(fault.delay)
                    elif fault.kind == "reset_mid_body":
                        self.wfile.write(data[: len(data) // 2])
                        self._reset()
                    elif fault.kind == "endless":
                        sent = 0
                        while data and sent < 4 << 30:  # 4 GiB at most: the client must stop long before
                            self.wfile.write(data)
                            sent += len(data)
                    else:
                        self.wfile.write(data[: len(data) + min(fault.extra, 0)] if fault.extra < 0 else data)
                        self.wfile.flush()
                except OSError:
                    pass

            def _paginate_tags(self, body: bytes) -> None:
                url = urlsplit(self.path)
                query = parse_qs(url.query)
                full_path = self.path
                self.path = url.path
                status, headers, data = self._forward(body)
                self.path = full_path
                if status != 200:
                    return self._reply(status, headers, data)
                doc = json.loads(data)
                tags = sorted(doc.get("tags") or [])
                if "last" in query:
                    tags = [t for t in tags if t > query["last"][0]]
                n = int(query.get("n", ["1000"])[0])
                page, more = tags[:n], len(tags) > n
                out = [("Content-Type", "application/json")]
                if more:
                    out.append(("Link", f'<{url.path}?{urlencode({"n": n, "last": page[-1]})}>; rel="next"'))
                self._reply(200, out, json.dumps({"name": doc["name"], "tags": page}).encode())

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.addr = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def count(self, method: str, path_regex: str) -> int:
        """How many requests with this method and a path matching the regex reached the proxy."""
        return sum(1 for s in self.seen if s.method == method and re.search(path_regex, s.path))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def fault_proxy(upstream: str, *, with_store: bool = False) -> Iterator[FaultProxy]:
    """A FaultProxy (and optional ObjectStore) for the duration of a test."""
    store = ObjectStore() if with_store else None
    proxy = FaultProxy(upstream, store)
    try:
        yield proxy
    finally:
        proxy.close()
        if store is not None:
            store.close()
