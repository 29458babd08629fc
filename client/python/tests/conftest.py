"""Fixtures: a real pacerd on a socket of its own, the mock Anthropic API as a process, and the
`pacer` command. The binaries come from `$PACER_BIN_DIR`, else the workspace's target/debug
(`cargo build -p pacer-daemon -p pacer-cli -p pacer-tests` first)."""

from __future__ import annotations

import json
import os
import pathlib
import socket as socketlib
import subprocess
import tempfile
import time
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
BIN = pathlib.Path(os.environ.get("PACER_BIN_DIR") or ROOT / "target" / "debug")


def binary(name: str) -> str:
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: cargo build -p pacer-daemon -p pacer-cli -p pacer-tests")
    return str(path)


def isolated_env(home: pathlib.Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PACER_") and k != "RUST_LOG"}
    env["XDG_STATE_HOME"] = str(home)
    env["XDG_CONFIG_HOME"] = str(home)
    return env


class Daemon:
    def __init__(self, home: pathlib.Path) -> None:
        self.home = home
        self.socket = str(home / "pacer.sock")
        self.process = subprocess.Popen(
            [binary("pacerd"), "--socket", self.socket, "--no-gateway"],
            env=isolated_env(home),
            stdout=subprocess.DEVNULL,
            stderr=open(home / "pacerd.stderr", "wb"),
        )
        deadline = time.monotonic() + 10
        while not self._answers():
            assert self.process.poll() is None, (home / "pacerd.stderr").read_text()
            assert time.monotonic() < deadline, "pacerd did not come up"
            time.sleep(0.02)

    def _answers(self) -> bool:
        with socketlib.socket(socketlib.AF_UNIX) as s:
            try:
                s.connect(self.socket)
                return True
            except OSError:
                return False

    def pacer(self, *args: str, timeout: float = 30, env: dict[str, str] | None = None):
        full = isolated_env(self.home)
        full.update(env or {})
        return subprocess.run(
            [binary("pacer"), *args],
            env=full,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def status(self) -> dict:
        out = self.pacer("status", "--json", "--socket", self.socket)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


class Mock:
    """The mock Anthropic API (`mock-upstream`), enforcing its limits like the real one."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            [binary("mock-upstream"), *args], stdout=subprocess.PIPE, text=True
        )
        self.url = self.process.stdout.readline().strip()
        assert self.url.startswith("http"), self.url

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/stats") as r:
            return json.load(r)

    def inject(self, **faults) -> None:
        request = urllib.request.Request(
            f"{self.url}/mock/inject",
            data=json.dumps(faults).encode(),
            method="POST",
            headers={"content-type": "application/json"},
        )
        urllib.request.urlopen(request).read()

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


@pytest.fixture
def home():
    with tempfile.TemporaryDirectory(prefix="pacer-py-") as d:
        yield pathlib.Path(d)


@pytest.fixture
def daemon(home):
    d = Daemon(home)
    yield d
    d.stop()


@pytest.fixture
def mock_factory():
    started = []

    def start(*args: str) -> Mock:
        m = Mock(*args)
        started.append(m)
        return m

    yield start
    for m in started:
        m.stop()


@pytest.fixture
def client(daemon):
    import pacer

    return pacer.Client(daemon.socket, fail_closed=True)
