"""The `mlapi` command: `bake` a model directory at build time, `serve` it at run time, manage API `keys`.

Each command imports what it needs when it runs: `mlapi keys` works with the standard library alone, in the
environment `pulumi install` creates (the package with its `infra` extra, docs/deploy.md).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def _bake(args: argparse.Namespace) -> int:
    from mlapi.build.bake import bake
    from mlapi.build.calibration import read_texts
    from mlapi.build.export import BakeError
    from mlapi.build.sources import one_line

    calibration: list[str] = []
    if args.calibration_texts is not None:
        try:
            calibration = read_texts(Path(args.calibration_texts))
        except ValueError as exc:
            print(f"mlapi bake: --calibration-texts: {exc}", file=sys.stderr)
            return 2
    try:
        manifest = bake(args.source, Path(args.out), revision=args.revision, onnx_only=args.onnx_only,
                        quantize=not args.no_int8, force=args.force, token=os.environ.get("HF_TOKEN") or None,
                        quiet=True, calibration_texts=calibration)
    except BakeError as exc:
        print(f"mlapi bake: {one_line(exc)}", file=sys.stderr)
        return 2
    q = manifest.quantization
    print(f"baked {manifest.source} ({manifest.task}, labels {manifest.labels}) into {args.out}")
    if manifest.origin and manifest.origin.commit:
        print(f"hub commit: {manifest.origin.commit}")
    print(f"serving precision: {manifest.default_precision} ({q.recipe or '-'}: {q.reason})")
    print(f"content hash: {manifest.content_hash}")
    return 0


_SERVE_FLAGS = {"model_dir": "--model-dir", "host": "--host", "port": "--port"}


def _setting_name(field: str, overrides: dict[str, object]) -> str:
    """How the user set `field`: the flag when given on the command line, else its MLAPI_ variable."""
    variable = f"MLAPI_{field.upper()}"
    if field in overrides:
        return f"{_SERVE_FLAGS[field]} ({variable})"
    return f"{variable} (or {_SERVE_FLAGS[field]})" if field in _SERVE_FLAGS else variable


def _bake_hint(model_dir: Path) -> str:
    """The bake command that makes `model_dir` servable, never one that writes over what is in it.

    `mlapi bake --out DIR` refuses a DIR holding files that are not a baked model (and `--force` would replace them),
    so a directory that already holds files (a checkpoint, most likely) is baked from, into a directory of its own
    under models/; only a missing or empty directory is the place to bake into.
    """
    if model_dir.is_dir() and any(model_dir.iterdir()):
        out = Path("models") / model_dir.resolve().name
        if out.resolve() == model_dir.resolve():
            out = out.with_name(f"{out.name}-baked")
        return (f"if it is a checkpoint, bake it into a directory of its own: `mlapi bake {model_dir} --out {out}`, "
                f"then `mlapi serve {_SERVE_FLAGS['model_dir']} {out}`")
    return (f"run `mlapi bake [SOURCE] --out {model_dir}` first (SOURCE: a hub id or a checkpoint directory; "
            f"none bakes the bundled all-MiniLM-L6-v2), or point {_SERVE_FLAGS['model_dir']} at a baked directory")


def _serve(args: argparse.Namespace) -> int:
    overrides = {k: v for k, v in {"model_dir": args.model_dir, "host": args.host, "port": args.port}.items() if v}
    # Tokenizers' own thread pool fights the batcher's; the batcher already fills the cores.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from pydantic import ValidationError

    from mlapi.settings import Settings

    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        for err in exc.errors():
            field = "_".join(str(p) for p in err["loc"])
            where = f"{_setting_name(field, overrides)}: " if field else ""
            print(f"invalid configuration: {where}{err['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 2
    if not (settings.model_dir / "manifest.json").is_file():
        print(f"invalid configuration: {_setting_name('model_dir', overrides)}: {settings.model_dir} is not a baked "
              f"model directory; {_bake_hint(settings.model_dir)}", file=sys.stderr)
        return 2

    from mlapi.server import AddressUnavailable, bind

    try:  # before the model loads: a busy port is known in a millisecond, not after the load
        sock = bind(settings.host, settings.port)
    except AddressUnavailable as exc:
        print(f"mlapi serve: {exc}; choose another with {_SERVE_FLAGS['port']} (or MLAPI_PORT)"
              if exc.in_use else f"mlapi serve: {exc}", file=sys.stderr)
        return 2

    from mlapi.api.app import create_app
    from mlapi.metrics_export import MetricsLogError
    from mlapi.server import serve

    try:
        app = create_app(settings)
    except MetricsLogError as exc:
        sock.close()
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return 2
    serve(app, settings, sock)
    return 0


def _keys_create(args: argparse.Namespace) -> int:
    from mlapi.auth.keys import KeysFileError, generate_key, key_line

    key = generate_key()
    try:
        line = key_line(args.name, key, args.rate, args.texts)
    except KeysFileError as exc:
        print(f"mlapi keys create: {exc}", file=sys.stderr)
        return 2
    print(f"API key for {args.name} (shown only now; give it to the client, it is not stored anywhere):")
    print(f"  {key}")
    print("Add this line to the keys file (MLAPI_API_KEYS_FILE) or the MLAPI_API_KEYS secret:")
    print(f"  {line}")
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    from mlapi.auth.keys import KeysFileError, parse_keys, read_keys_file

    try:
        if args.file:
            keys = read_keys_file(Path(args.file))
        elif os.environ.get("MLAPI_API_KEYS_FILE"):
            keys = read_keys_file(Path(os.environ["MLAPI_API_KEYS_FILE"]))
        elif os.environ.get("MLAPI_API_KEYS"):
            keys = parse_keys(os.environ["MLAPI_API_KEYS"], "MLAPI_API_KEYS")
        else:
            print("mlapi keys list: give --file, or set MLAPI_API_KEYS_FILE or MLAPI_API_KEYS", file=sys.stderr)
            return 2
    except KeysFileError as exc:
        print(f"mlapi keys list: {exc}", file=sys.stderr)
        return 2

    def show(value: float | None) -> str:
        return "default" if value is None else f"{value:g}/s"

    print(f"{'NAME':<24} {'REQUESTS':>10} {'TEXTS':>10}  STATUS")
    for key in keys:
        print(f"{key.name:<24} {show(key.rate):>10} {show(key.texts):>10}  {'revoked' if key.revoked else 'active'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line; `mlapi --help` documents it."""
    parser = argparse.ArgumentParser(prog="mlapi", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    bake = sub.add_parser("bake", help="export a Hugging Face model to a self-contained, servable directory")
    bake.add_argument("source", nargs="?", default=None,
                      help="hub id (a private one reads HF_TOKEN), local checkpoint directory, or s3://BUCKET/PREFIX "
                           "(the AWS credential chain; AWS_ENDPOINT_URL_S3 works) (default: the bundled "
                           "all-MiniLM-L6-v2)")
    bake.add_argument("--out", required=True,
                      help="directory to write: new, empty, or an earlier bake, which is replaced")
    bake.add_argument("--force", action="store_true",
                      help="replace --out even when it holds files that are not a baked model")
    bake.add_argument("--revision", default=None,
                      help="hub revision (commit SHA to pin; a branch or tag is resolved and its commit recorded)")
    bake.add_argument("--onnx-only", action="store_true", help="leave out the torch weights (runtime images)")
    bake.add_argument("--no-int8", action="store_true", help="skip int8 quantisation; serve fp32")
    bake.add_argument("--calibration-texts", metavar="FILE", default=None,
                      help="UTF-8 file, one text per line (at most 10,000), from the traffic the model will serve: "
                           "int8 scales fixed at bake are measured on these too, so fewer of its texts clip")
    bake.set_defaults(handler=_bake)

    serve = sub.add_parser("serve", help="serve a baked model directory over HTTP")
    serve.add_argument("--model-dir", default=None, help="baked model directory (MLAPI_MODEL_DIR)")
    serve.add_argument("--host", default=None, help="bind address (MLAPI_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (MLAPI_PORT, default 8000)")
    serve.set_defaults(handler=_serve)

    keys = sub.add_parser("keys", help="create API keys and list the keys file (never shows keys)")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="print a new key once, and the keys-file line that admits it")
    create.add_argument("name", help="who the key is for (letters, digits, . _ @ -)")
    create.add_argument("--rate", type=float, default=None,
                        help="requests per second for this key (default: MLAPI_RATE_LIMIT_REQUESTS)")
    create.add_argument("--texts", type=float, default=None,
                        help="texts per second for this key (default: MLAPI_RATE_LIMIT_TEXTS)")
    create.set_defaults(handler=_keys_create)
    listing = keys_sub.add_parser("list", help="names, rates and status of the keys in the keys file")
    listing.add_argument("--file", default=None, help="keys file (default: MLAPI_API_KEYS_FILE, or MLAPI_API_KEYS)")
    listing.set_defaults(handler=_keys_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mlapi` console script."""
    args = build_parser().parse_args(argv)
    if args.command == "bake":
        # Bake's own progress lines only, on stdout (stderr is for the one line saying why a bake failed); the
        # libraries it drives log at INFO about their internals.
        logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                            stream=sys.stdout)
        logging.getLogger("mlapi").setLevel(logging.INFO)
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
