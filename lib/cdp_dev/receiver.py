"""A webhook receiver on 127.0.0.1 for the activation tests and the latency benchmark: a real HTTP
server in a thread that takes `cdp activate`'s JSON POSTs, answers with the status its plan says,
and records every event it acknowledged with the time it arrived."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    key: str
    event: dict
    at: float  # time.time() when the request arrived


@dataclass
class Receiver:
    """`fail_next`: how many requests to answer 500 before answering 200 again (`fail_always` holds
    it at 500)."""

    fail_next: int = 0
    fail_always: bool = False
    received: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's name)
                arrived = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver._status()
                if status == 200:
                    events = json.loads(body)["events"]
                    with receiver._lock:
                        receiver.received += [Received(e["event_key"], e, arrived) for e in events]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="receiver", daemon=True)
        self.thread.start()

    def _status(self) -> int:
        with self._lock:
            if self.fail_always or self.fail_next > 0:
                self.fail_next = max(0, self.fail_next - 1)
                self.statuses.append(500)
                return 500
            self.statuses.append(200)
            return 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/activation"

    def keys(self) -> set[str]:
        with self._lock:
            return {r.key for r in self.received}

    def duplicates(self) -> int:
        """Events received more than once (after deduplication by key they count once)."""
        with self._lock:
            return sum(n - 1 for n in Counter(r.key for r in self.received).values())

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
