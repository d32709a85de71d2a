"""Noisy neighbour on a live `mlapi serve` with API keys: what a light tenant sees while another floods.

One key floods the largest requests the per-request token cap admits (texts of ~1,800 characters) from two
threads; another key sends one short text a second. Reports the light tenant's statuses and latency percentiles
and what the heavy tenant got, to load/results/<date>-noisy.{json,md}. `make bench` runs it after load/bench.py;
the same scenario is a test (tests/service/live/test_noisy_neighbour.py).

Usage: python load/bench_noisy.py [--seconds 30] [--model-dir DIR]   (default: the bundled MiniLM, baked here)
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
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent
HEAVY_TEXTS = 480


def _post(url: str, body: bytes, key: str) -> tuple[int, float]:
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"X-API-Key": key, "Content-Type": "application/json"})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            return response.status, time.monotonic() - started
    except urllib.error.HTTPError as error:
        return error.code, time.monotonic() - started
    except OSError:
        return 0, time.monotonic() - started


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    from mlapi.auth.keys import generate_key, key_line

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--model-dir", type=Path)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="noisy-bench-"))
    model_dir = args.model_dir or work / "model"
    if args.model_dir is None:
        subprocess.run([sys.executable, "-m", "mlapi", "bake", "--out", str(model_dir), "--onnx-only"], check=True,
                       stdout=subprocess.DEVNULL)
    heavy_key, light_key = generate_key(), generate_key()
    (work / "keys.txt").write_text(f"{key_line('heavy', heavy_key)}\n{key_line('light', light_key)}\n")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLAPI_")}
    env.update(MLAPI_API_KEYS_FILE=str(work / "keys.txt"), MLAPI_CACHE_ENABLED="false",
               TOKENIZERS_PARALLELISM="false")
    server = subprocess.Popen([sys.executable, "-m", "mlapi", "serve", "--model-dir", str(model_dir), "--port",
                               str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/predict"
    heavy: list[tuple[int, float]] = []
    light: list[tuple[int, float]] = []
    stop = threading.Event()
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)

        def flood(worker: int) -> None:
            n = 0
            while not stop.is_set():
                words = " ".join(f"w{worker}x{n}y{i}" for i in range(180))
                body = json.dumps({"text": [f"{i} {words}"[:1800] for i in range(HEAVY_TEXTS)]}).encode()
                heavy.append(_post(url, body, heavy_key))
                n += 1

        for worker in range(2):
            threading.Thread(target=flood, args=(worker,), daemon=True).start()
        time.sleep(2)
        for i in range(args.seconds):
            tick = time.monotonic()
            light.append(_post(url, json.dumps({"text": [f"a short text {i}"]}).encode(), light_key))
            time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    finally:
        stop.set()
        server.kill()
        server.wait(timeout=60)
    latencies = [seconds for _, seconds in light]
    date = datetime.date.today().isoformat()
    load = os.getloadavg()[0]
    result = {
        "date": date, "command": "python load/bench_noisy.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cores": os.cpu_count(), "load_average_1m": round(load, 2), "seconds": args.seconds,
        "light": {"requests": len(light), "ok": sum(1 for s, _ in light if s == 200),
                  "p50_s": round(_percentile(latencies, 0.5), 3), "p99_s": round(_percentile(latencies, 0.99), 3),
                  "max_s": round(max(latencies), 3)},
        "heavy": {"finished": len(heavy), "statuses": {str(s): sum(1 for t, _ in heavy if t == s)
                                                       for s in sorted({t for t, _ in heavy})}},
    }
    out = ROOT / "results" / f"{date}-noisy"
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [f"# Noisy neighbour, {date}", "", f"`{result['command'].strip()}`, {os.cpu_count()} cores, 1-minute "
             f"load average at the end {result['load_average_1m']}.", "",
             f"Heavy key: two threads flooding {HEAVY_TEXTS} texts of ~1,800 characters per request. Light key: one "
             f"short text a second for {args.seconds} s.", "",
             "| tenant | answered 200 | p50 s | p99 s | slowest s |", "|---|---:|---:|---:|---:|",
             f"| light | {result['light']['ok']} of {result['light']['requests']} | {result['light']['p50_s']} | "
             f"{result['light']['p99_s']} | {result['light']['max_s']} |", "",
             f"Heavy requests finished in the window, by status: {result['heavy']['statuses'] or 'none yet'}."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if result["light"]["ok"] == result["light"]["requests"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
