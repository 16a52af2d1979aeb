"""Real services for the stack and UI tests: a PostgreSQL server, an ``mlflow server`` and headless Chromium.

Each is started for real on 127.0.0.1 (free ports, temporary folders) and stopped when its block exits. A test
that needs a program the machine lacks is skipped with the program's name; ``.ci/run`` installs them.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

#: Chromium as the issue asks (headless, no sandbox: CI runs as root), without the background connections
#: that a closed network refuses.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_program(name: str) -> str | None:
    """``initdb`` / ``pg_ctl``: on PATH, or in Debian's ``/usr/lib/postgresql/<version>/bin``."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), key=lambda p: int(p.split("/")[4]))
    return candidates[-1] if candidates else None


@contextlib.contextmanager
def postgres(*databases: str) -> Iterator[str]:
    """A fresh PostgreSQL cluster on 127.0.0.1 holding ``databases``; yields ``postgresql+psycopg://psvit@host:port``.

    ``initdb`` refuses to run as root, so as root the cluster belongs to ``nobody``.
    """
    initdb, pg_ctl = postgres_program("initdb"), postgres_program("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL server not installed (initdb/pg_ctl not found; .ci/run installs Debian's postgresql)")
    import psycopg

    root = Path(tempfile.mkdtemp(prefix="psvit-pg-"))
    owner = {}
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(root, nobody.pw_uid, nobody.pw_gid)
        owner = {"user": nobody.pw_uid, "group": nobody.pw_gid}
    data, port = root / "data", free_port()
    try:
        subprocess.run(
            [initdb, "-D", str(data), "-U", "psvit", "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True,
            capture_output=True,
            **owner,
        )
        subprocess.run(
            [
                pg_ctl,
                "-D",
                str(data),
                "-l",
                str(root / "server.log"),
                "-w",
                "-t",
                "60",
                "-o",
                f"-h 127.0.0.1 -p {port} -k {data}",
                "start",
            ],
            check=True,
            capture_output=True,
            **owner,
        )
        try:
            with psycopg.connect(f"postgresql://psvit@127.0.0.1:{port}/postgres", autocommit=True) as conn:
                for name in databases:
                    conn.execute(f'CREATE DATABASE "{name}"')
            yield f"postgresql+psycopg://psvit@127.0.0.1:{port}"
        finally:
            subprocess.run([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True, **owner)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Poll ``url`` until it answers 200; fail with the server's log if it exits or never answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=5) as response:
            if response.status == 200:
                return
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout} s:\n{log.read_text()[-3000:]}")


@contextlib.contextmanager
def mlflow_server(backend_store_uri: str, folder: Path, command: str = "server") -> Iterator[str]:
    """``mlflow server`` (or ``mlflow ui``) on 127.0.0.1 with one worker, run in ``folder``, serving new artifacts
    from ``folder/artifacts``; yields its URL. Its output goes to ``folder/mlflow-<command>.log``.
    """
    port, log = free_port(), folder / f"mlflow-{command}.log"
    argv = [
        sys.executable,
        "-m",
        "mlflow",
        command,
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no GenAI job workers: 7 fewer processes
    with log.open("w") as out:
        server = subprocess.Popen(
            argv, cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(f"{url}/health", server, log)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)  # its own session: the server and the workers it forked
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if not found:
        pytest.skip("Chromium not installed (.ci/run installs Debian's chromium)")
    return found


def browse(
    url: str,
    profile: Path,
    *,
    screenshot: Path | None = None,
    budget_ms: int = 30000,
    size: tuple[int, int] = (1600, 1000),
) -> str:
    """Load ``url`` in headless Chromium with a fresh profile, let its scripts run for ``budget_ms`` of virtual time,
    and return the rendered DOM (or, with ``screenshot``, write a PNG there and return Chromium's output)."""
    profile.mkdir(parents=True, exist_ok=True)
    action = [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    result = subprocess.run(
        [
            chromium(),
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}",
            f"--virtual-time-budget={budget_ms}",
            *action,
            url,
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


class LivePage:
    """A page of headless Chromium driven over the DevTools protocol (``--remote-debugging-pipe``: JSON messages,
    each ended by a NUL byte, on file descriptors 3 and 4), in real time.

    :func:`browse` runs pages in virtual time, which suits MLflow's React pages; but a large script in a sandboxed
    iframe (MLflow's preview of an HTML artifact) there often never runs, so such a page is looked at live.
    """

    def __init__(self, profile: Path, size: tuple[int, int]) -> None:
        commands, self._commands = os.pipe()
        self._replies, replies = os.pipe()

        def on_fds_3_and_4() -> None:  # in the child: the pipe ends where Chromium looks for them, kept on exec
            ours = os.dup(commands), os.dup(replies)
            for fd, end in zip((3, 4), ours):
                os.dup2(end, fd)
                os.set_inheritable(fd, True)

        self._chromium = subprocess.Popen(
            [chromium(), *CHROMIUM_FLAGS, "--remote-debugging-pipe", f"--user-data-dir={profile}", "about:blank"],
            close_fds=False,
            preexec_fn=on_fds_3_and_4,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands)
        os.close(replies)
        self._buffer, self._last_id = b"", 0
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self._call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self._call(
            "Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1, mobile=False
        )

    def _call(self, method: str, **params: object) -> dict:
        self._last_id += 1
        message = {"id": self._last_id, "method": method, "params": params}
        if getattr(self, "_session", None):
            message["sessionId"] = self._session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        reply = self._next(lambda m: m.get("id") == self._last_id)
        assert "error" not in reply, reply
        return reply["result"]

    def _next(self, wanted) -> dict:
        """The next message from Chromium that is ``wanted``; the others (events, other replies) are skipped."""
        while True:
            while b"\0" in self._buffer:
                raw, self._buffer = self._buffer.split(b"\0", 1)
                message = json.loads(raw)
                if wanted(message):
                    return message
            chunk = os.read(self._replies, 1 << 20)
            assert chunk, "Chromium closed its DevTools pipe"
            self._buffer += chunk

    def open(self, url: str) -> None:
        """Go to ``url`` and wait for its load event."""
        self._call("Page.enable")
        self._call("Page.navigate", url=url)
        self._next(lambda m: m.get("method") == "Page.loadEventFired")

    def screenshot(self) -> bytes:
        """The page as it looks now, as PNG bytes."""
        return base64.b64decode(self._call("Page.captureScreenshot", format="png")["data"])

    def close(self) -> None:
        os.close(self._commands)
        self._chromium.kill()
        self._chromium.wait()
        os.close(self._replies)


@contextlib.contextmanager
def live_page(profile: Path, size: tuple[int, int] = (1600, 1000)) -> Iterator[LivePage]:
    """A :class:`LivePage` in a fresh profile, closed when the block exits."""
    chromium()
    profile.mkdir(parents=True, exist_ok=True)
    page = LivePage(profile, size)
    try:
        yield page
    finally:
        page.close()
