"""A scripted OpenAI-compatible server for fault-injection tests (standard library only).

``FaultServer(script, then="ok")`` listens on 127.0.0.1 (a free port) in a daemon thread and
answers ``POST /v1/chat/completions`` and ``POST /v1/completions``. Request number ``i`` (counted
from 0 in arrival order) gets the behaviour ``script[i]``, and every request after the script
gets ``then`` (a behaviour, or a function from the request's JSON body to one, e.g. a 500 for
one model name only). Behaviours:

* ``ok``: a well-formed completion, one choice per prompt, text ``ok_text`` (a string, or a
  function from the request's JSON body to one; completions with ``echo``/``logprobs`` get
  token log-probabilities too);
* ``500``: HTTP 500 with a JSON error body; ``401``: HTTP 401;
* ``429``: HTTP 429 with ``Retry-After: <retry_after>``;
* ``hang``: no answer for ``hang_s`` seconds (then the connection is closed);
* ``badjson``: 200 with a body that is not JSON;
* ``nochoices``: 200 with a JSON object that has no ``choices``;
* ``emptychoices``: 200 with ``"choices": []``.

:meth:`FaultServer.set_script` gives the same server (same URL) a new script, e.g. a healthy one
for the rerun after a failure; ``port`` binds a chosen port (the one a "down" test used).

Every request is recorded (arrival time, path, headers, JSON body) in ``requests``. The server
stops on ``close()`` / leaving the ``with`` block, and by itself after ``lifetime`` seconds so a
failed test never leaves it running.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

BEHAVIOURS = ("ok", "500", "401", "429", "hang", "badjson", "nochoices", "emptychoices")
Then = str | Callable[[dict[str, Any]], str]  # a behaviour, or one chosen from the request body


def _check(behaviour: str) -> str:
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"unknown behaviour {behaviour!r}; known: {BEHAVIOURS}")
    return behaviour


def closed_port_url() -> str:
    """The base URL of a local port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


def _n_prompts(body: dict[str, Any]) -> int:
    """How many completions a request asks for: one per prompt of a batched /completions."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (list, str)):
        return len(prompt)
    return 1


def _n_tokens(prompt: Any) -> int:
    return len(prompt) if isinstance(prompt, list) else max(1, len(str(prompt).split()))


def ok_body(path: str, body: dict[str, Any], text: str) -> dict[str, Any]:
    """A well-formed OpenAI response to ``body`` sent to ``path``."""
    if path.endswith("/chat/completions"):
        return {
            "id": "chatcmpl-fault",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": text},
                }
            ],
        }
    prompts = body.get("prompt")
    if not (isinstance(prompts, list) and prompts and isinstance(prompts[0], (list, str))):
        prompts = [prompts]
    choices = []
    for i, p in enumerate(prompts):
        choice: dict[str, Any] = {"index": i, "text": text, "finish_reason": "stop"}
        if body.get("logprobs"):  # loglikelihood: echo the prompt with a log-prob per token
            n = _n_tokens(p) + 1
            choice["logprobs"] = {
                "token_logprobs": [None] + [-0.25] * (n - 1),
                "top_logprobs": [None] + [{"x": -0.25}] * (n - 1),
            }
        choices.append(choice)
    return {
        "id": "cmpl-fault",
        "object": "text_completion",
        "model": body.get("model"),
        "choices": choices,
    }


class FaultServer:
    def __init__(
        self,
        script: list[str] | tuple[str, ...] = (),
        then: Then = "ok",
        *,
        ok_text: str | Callable[[dict[str, Any]], str] = (
            "<answer>7</answer>\n<confidence>0.8</confidence>"
        ),
        retry_after: str = "1",
        hang_s: float = 5.0,
        lifetime: float = 180.0,
        port: int = 0,
    ) -> None:
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.set_script(script, then)
        self.ok_text, self.retry_after, self.hang_s = ok_text, retry_after, hang_s
        self._closed = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        self._timer = threading.Timer(lifetime, self.close)
        self._timer.daemon = True
        self._timer.start()

    def __enter__(self) -> FaultServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._timer.cancel()
            self._httpd.shutdown()
            self._httpd.server_close()

    def set_script(self, script: list[str] | tuple[str, ...], then: Then = "ok") -> None:
        """Behaviours for the next requests (counted from now), then ``then`` for the rest."""
        for b in [*script, *([] if callable(then) else [then])]:
            _check(b)
        with self._lock:
            self._offset = len(self.requests)
            self.script, self.then = list(script), then

    @property
    def count(self) -> int:
        """Requests received since the last :meth:`set_script` (or since the start)."""
        with self._lock:
            return len(self.requests) - self._offset

    def _next(self, path: str, headers: dict[str, str], body: Any) -> str:
        with self._lock:
            i = len(self.requests) - self._offset
            self.requests.append(
                {"t": time.monotonic(), "path": path, "headers": headers, "body": body}
            )
            if i < len(self.script):
                return self.script[i]
            then = self.then
        return _check(then(body or {})) if callable(then) else then

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # keep test output clean
                pass

            def _send(
                self, status: int, payload: bytes, extra: dict[str, str] | None = None
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                behaviour = server._next(self.path, dict(self.headers.items()), body)
                if behaviour == "hang":
                    server._closed.wait(server.hang_s)
                    self.close_connection = True
                    return
                if behaviour == "ok":
                    text = server.ok_text
                    if callable(text):
                        text = text(body or {})
                    out = ok_body(self.path, body or {}, text)
                    self._send(200, json.dumps(out).encode())
                elif behaviour in ("500", "401"):
                    msg = {"error": {"message": f"injected {behaviour}", "type": "fault"}}
                    self._send(int(behaviour), json.dumps(msg).encode())
                elif behaviour == "429":
                    msg = {"error": {"message": "rate limited", "type": "rate_limit"}}
                    self._send(429, json.dumps(msg).encode(), {"Retry-After": server.retry_after})
                elif behaviour == "badjson":
                    self._send(200, b"<html>upstream proxy error</html>")
                elif behaviour == "nochoices":
                    self._send(200, json.dumps({"id": "x", "object": "chat.completion"}).encode())
                elif behaviour == "emptychoices":
                    self._send(200, json.dumps({"id": "x", "choices": []}).encode())

        return Handler
