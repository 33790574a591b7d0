"""A real `exos devnet` process for end-to-end tests: started on free ports in a temp data dir,
with its output collected, its deployment.json read, and a clean SIGTERM stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any


class DevnetProcess:
    def __init__(self, data_dir: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.process = subprocess.Popen(
            [sys.executable, "-m", "node.cli", "devnet", "--data-dir", str(data_dir), "--eth-port", "0",
             "--tz-port", "0", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.deployment = self._wait_deployment()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def _wait_deployment(self, timeout: float = 60) -> dict[str, Any]:
        path = self.data_dir / "deployment.json"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError("devnet exited:\n" + "".join(self.lines))
            if path.exists() and any("eth_* JSON-RPC on" in line for line in self.lines):
                return json.loads(path.read_text())  # type: ignore[no-any-return]
            time.sleep(0.05)
        self.process.kill()
        raise AssertionError("devnet did not start:\n" + "".join(self.lines))

    @property
    def eth_url(self) -> str:
        return str(self.deployment["l1"]["rpcUrl"])

    @property
    def tz_url(self) -> str:
        return str(self.deployment["tradezone"]["rpcUrl"])

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(30)
        self._reader.join(5)
        return code

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(30)
        self._reader.join(5)
