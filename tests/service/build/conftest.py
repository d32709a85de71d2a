"""Fixtures for bake's sources: moto's real S3 server as its own process, and a stand-in Hugging Face hub.

Bake reaches S3 through boto3 exactly as in a build (the standard credential chain, AWS_ENDPOINT_URL_S3 pointing
at the server), and the hub through huggingface_hub with HF_ENDPOINT pointing at a local HTTP server that answers
as the hub does when a repo is missing, private or gated, and records the Authorization header it was sent.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class MotoServer:
    """`python -m moto.server` on a free port: S3 (and IAM) over HTTP, with auth off until `enforce_auth`."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.process.returncode}; see {log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"moto server never listened; see {log_path}")

    def env(self, **extra: str) -> dict[str, str]:
        """A clean environment for `mlapi bake` that reaches this server through boto3's own settings."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
            "HOME": os.environ.get("HOME", "/tmp"),
            "AWS_ENDPOINT_URL_S3": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": "/nonexistent/aws-config",
            "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent/aws-credentials",
            "AWS_EC2_METADATA_DISABLED": "true",
            "HF_HUB_OFFLINE": "1",
            **extra,
        }

    def client(self, service: str = "s3", **credentials: str):  # type: ignore[no-untyped-def]
        import boto3

        return boto3.client(
            service, endpoint_url=self.url, region_name="us-east-1",
            aws_access_key_id=credentials.get("key", "testing"),
            aws_secret_access_key=credentials.get("secret", "testing"),
        )

    def enforce_auth(self) -> None:
        """From now on the server checks every request's credentials and IAM policies, as AWS does."""
        request = urllib.request.Request(f"{self.url}/moto-api/reset-auth", data=b"0", method="POST",
                                         headers={"Content-Type": "text/plain"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture(scope="module")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto S3 server for a test module; each test makes its own bucket."""
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    yield server
    server.stop()


@pytest.fixture
def strict_moto_server(tmp_path: Path) -> Iterator[MotoServer]:
    """A moto server of its own for a test that turns authentication on."""
    server = MotoServer(tmp_path / "moto-strict.log")
    yield server
    server.stop()


def upload_dir(client, bucket: str, prefix: str, directory: Path) -> dict[str, dict]:  # type: ignore[no-untyped-def]
    """Put every file of `directory` under `prefix`; returns each key's put_object answer (ETag, VersionId)."""
    answers = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        key = f"{prefix}{path.relative_to(directory).as_posix()}"
        answers[key] = client.put_object(Bucket=bucket, Key=key, Body=path.read_bytes())
    return answers


@pytest.fixture(scope="session")
def s3_upload() -> Callable[..., dict[str, dict]]:
    """`upload_dir`, for tests that put a checkpoint into a bucket."""
    return upload_dir


class FakeHub:
    """An HTTP server at HF_ENDPOINT that answers the requests huggingface_hub makes as the hub would.

    A repo added with `serve(repo_id, commit, directory, token)` is served from `directory` at `commit` (its
    `main` resolves to it), to requests that carry `Bearer TOKEN` when a token is given, as for a private repo;
    everything else gets the configured error: `status`, `error_code` and `error_message` are what the hub sends
    (401 and X-Error-Code RepoNotFound for a missing or private repo without a token, 403 GatedRepo, 404
    RevisionNotFound). `authorizations` and `paths` record what it was sent.
    """

    def __init__(self) -> None:
        self.status = 401
        self.error_code: str | None = "RepoNotFound"
        self.error_message = "Repository not found"
        self.authorizations: list[str | None] = []
        self.paths: list[str] = []
        self.repos: dict[str, tuple[str, Path, str | None]] = {}
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                hub.authorizations.append(self.headers.get("Authorization"))
                hub.paths.append(self.path)
                served = hub.answer(self.path.split("?")[0], self.headers.get("Authorization"))
                if served is None:
                    self._error()
                    return
                body, headers = served
                self.send_response(200)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _error(self) -> None:
                body = json.dumps({"error": hub.error_message}).encode()
                self.send_response(hub.status)
                if hub.error_code:
                    self.send_header("X-Error-Code", hub.error_code)
                self.send_header("X-Error-Message", hub.error_message)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = _answer  # noqa: N815

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, repo_id: str, commit: str, directory: Path, token: str | None = None) -> None:
        """Serve `directory` as hub repo `repo_id` at `commit`; only to `token` when one is given."""
        self.repos[repo_id] = (commit, directory, token)

    def answer(self, path: str, authorization: str | None) -> tuple[bytes, dict[str, str]] | None:
        """The body and headers for a request to a served repo; None for the configured error."""
        import hashlib

        for repo_id, (commit, directory, token) in self.repos.items():
            if token is not None and authorization != f"Bearer {token}":
                continue
            files = sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())
            if path in (f"/api/models/{repo_id}/revision/main", f"/api/models/{repo_id}/revision/{commit}"):
                info = {"id": repo_id, "modelId": repo_id, "sha": commit, "private": token is not None,
                        "siblings": [{"rfilename": name} for name in files]}
                return json.dumps(info).encode(), {"Content-Type": "application/json"}
            if path == f"/api/models/{repo_id}/tree/{commit}":
                tree = [{"type": "file", "path": name, "size": (directory / name).stat().st_size,
                         "oid": hashlib.sha1((directory / name).read_bytes()).hexdigest()} for name in files]
                return json.dumps(tree).encode(), {"Content-Type": "application/json"}
            prefix = f"/{repo_id}/resolve/{commit}/"
            if path.startswith(prefix) and path[len(prefix):] in files:
                body = (directory / path[len(prefix):]).read_bytes()
                return body, {"ETag": f'"{hashlib.sha1(body).hexdigest()}"', "X-Repo-Commit": commit,
                              "Content-Type": "application/octet-stream"}
        return None

    def repo_authorizations(self) -> list[str | None]:
        """The Authorization headers of the requests for repos and their files (huggingface_hub makes others too)."""
        return [auth for path, auth in zip(self.paths, self.authorizations, strict=True)
                if path.startswith("/api/models/") or "/resolve/" in path]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    hub = FakeHub()
    yield hub
    hub.stop()


@pytest.fixture
def run_bake(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """`run_bake(*args, env=...)`: `python -m mlapi bake ARGS` as its own process, output captured."""

    def run(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                "HOME": os.environ.get("HOME", "/tmp"), "HF_HOME": str(tmp_path / "hf-home"), "HF_HUB_OFFLINE": "1"}
        return subprocess.run([sys.executable, "-m", "mlapi", "bake", *args], capture_output=True, text=True,
                              timeout=timeout, env={**base, **(env or {})})

    return run
