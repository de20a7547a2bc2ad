"""A small standard-library client for `grmp-iqa serve` (used by the tests and `benchmarks/serve.py`), and
`running_server`, which runs an app under uvicorn on a background thread (tests, benchmarks, notebooks).

    with running_server(create_app(model)) as url:
        ScoreClient(url).score(["a.jpg", "b.png"])   # -> [{"name": "a.jpg", "score": 0.61}, ...]
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from urllib.parse import urlsplit

__all__ = ["ScoreClient", "Response", "encode_multipart", "running_server"]


def encode_multipart(files, field: str = "files") -> tuple[bytes, str]:
    """`(body, content_type)` of a multipart/form-data body with one part per `(name, bytes)` or path."""
    boundary = uuid.uuid4().hex
    parts = []
    for item in files:
        if isinstance(item, (str, os.PathLike)):
            with open(item, "rb") as file:
                item = (os.path.basename(os.fspath(item)), file.read())
        name, data = item
        safe = str(name).replace('"', "%22").replace("\r", " ").replace("\n", " ")
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{safe}"\r\n'
                     f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Response:
    def __init__(self, status: int, headers: dict, body: bytes):
        self.status, self.headers, self.body = status, headers, body

    def json(self):
        return json.loads(self.body)


class ScoreClient:
    """One keep-alive HTTP connection to the server (use one client per thread)."""

    def __init__(self, base_url: str, timeout: float = 60.0):
        parts = urlsplit(base_url)
        self.host, self.port, self.timeout = parts.hostname, parts.port or 80, timeout
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body=None, headers: dict | None = None) -> Response:
        for attempt in (0, 1):  # a kept-alive connection the server closed: reconnect once
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, body=body, headers=headers or {})
                response = self._conn.getresponse()
                result = Response(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
                if result.headers.get("connection", "").lower() == "close":
                    self.close()
                return result
            except (ConnectionError, http.client.RemoteDisconnected, http.client.CannotSendRequest, BrokenPipeError):
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def post_files(self, files) -> Response:
        body, content_type = encode_multipart(files)
        return self.request("POST", "/v1/score", body, {"Content-Type": content_type})

    def score(self, files) -> list[dict]:
        """Per file, in order, `{"name", "score"}` or `{"name", "error"}`; raises on a refused request."""
        response = self.post_files(files)
        if response.status != 200:
            raise RuntimeError(f"POST /v1/score answered {response.status}: {response.body[:500]!r}")
        return response.json()["results"]

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@contextmanager
def running_server(app, host: str = "127.0.0.1", ready_timeout: float = 60.0, log_level: str = "warning",
                   wait_ready: bool = True):
    """Run `app` under uvicorn on a free port of `host` in a background thread; yields its base URL after
    `/healthz` answers 200 (with `wait_ready`), and shuts the server down (lifespan included) on exit."""
    import uvicorn

    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on such sockets, and without it every kept-alive
    # response waits ~40 ms (Nagle against delayed ACKs: uvicorn writes headers and body separately)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, lifespan="on", timeout_graceful_shutdown=5))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True)
    thread.start()
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        client = ScoreClient(url, timeout=5)
        while wait_ready:
            if not thread.is_alive():
                raise RuntimeError("the server thread ended during startup")
            try:
                if client.request("GET", "/healthz").status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}/healthz did not answer 200 within {ready_timeout} s")
            time.sleep(0.05)
        client.close()
        yield url
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
