"""A local HTTP server that misbehaves on purpose (issue 10 item 17), on 127.0.0.1.

``/rgb.png`` serves a file at once (a loopback address the input policy should refuse);
``/slow`` announces 1 MB and sends one byte per second (a per-read timeout never fires).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class HostileServer:
    """Serve ``image`` at ``/rgb.png`` and a one-byte-per-second body at ``/slow``."""

    def __init__(self, image: Path):
        payload = image.read_bytes()
        stop = threading.Event()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 -- the http.server API
                slow = self.path == "/slow"
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(2**20 if slow else len(payload)))
                self.end_headers()
                try:
                    if not slow:
                        self.wfile.write(payload)
                        return
                    for byte in payload:
                        if stop.wait(1.0):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                except OSError:  # the client gave up (or was killed)
                    return

            def log_message(self, *args) -> None:  # quiet
                return

        self._stop = stop
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str) -> str:
        """``http://127.0.0.1:<port><path>``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def close(self) -> None:
        """Stop serving (slow responses end within a second)."""
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
