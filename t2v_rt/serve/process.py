"""``t2v-rt serve`` in a child process: what tests, benchmarks and embedding programs start.

    with ServerProcess("--max-streams", "8") as server:
        httpx.post(server.url + "/api/streams", json={"prompt": "a red ball"})

The server listens on a free port (``--port 0``) and says where in its log (``serving
http://HOST:PORT``); its stderr is read by a thread, kept in :attr:`lines`, so the child never
blocks on a full pipe. :meth:`stop` is SIGTERM (the server's own graceful stop), then a kill
after ``timeout`` seconds.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

_READY = re.compile(r"serving (http://([\d.]+):(\d+))")


class ServerProcess:
    """``python -m t2v_rt serve --port 0 *args`` started and waited for (``start_timeout`` s);
    :attr:`url`, :attr:`host`, :attr:`port` once it listens. Raises RuntimeError, with its log,
    when it exits or stays silent instead."""

    def __init__(self, *args: str, cwd: str | Path | None = None, start_timeout: float = 90.0,
                 stdout=subprocess.DEVNULL):
        self.proc = subprocess.Popen([sys.executable, "-m", "t2v_rt", "serve", "--port", "0",
                                      *args], cwd=cwd, stdout=stdout, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: list[str] = []
        ready = threading.Event()

        def pump() -> None:
            for line in self.proc.stderr:
                self.lines.append(line)
                if _READY.search(line):
                    ready.set()
            ready.set()             # it exited: stop waiting

        threading.Thread(target=pump, daemon=True).start()
        ready.wait(start_timeout)
        found = next((m for m in map(_READY.search, list(self.lines)) if m), None)
        if found is None:
            self.stop()
            raise RuntimeError("t2v-rt serve did not start:\n" + self.stderr)
        self.url, self.host, self.port = found.group(1), found.group(2), int(found.group(3))

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then a kill after ``timeout`` s; the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["ServerProcess"]
