# syntax=docker/dockerfile:1
#
# The prediction API image. Three stages:
#   bake          torch (CPU wheels) + the `torch` extra; runs `mlapi bake` once, at build time, so the
#                 model is inside the image and a starting container downloads nothing.
#   runtime-deps  a virtualenv with the `serve` extra only: onnxruntime, no torch, no compilers.
#   runtime       that virtualenv + the baked model, run as a fixed non-root UID; writes only to /tmp,
#                 so it runs with a read-only root filesystem.
#
# Build: docker buildx build --build-arg MODEL_ID=... --build-arg MODEL_REVISION=<commit> -t mlapi .

FROM python:3.11-slim-bookworm AS bake

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/tmp/hf \
    HF_HUB_DISABLE_TELEMETRY=1

WORKDIR /src

# Same version as the `torch` extra in pyproject.toml. PyPI's Linux wheel pulls in the CUDA
# libraries (gigabytes); PyTorch's CPU index serves the CPU-only build of the same release.
ARG TORCH_VERSION=2.13.0
RUN pip install --no-cache-dir --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"

COPY pyproject.toml README.md ./
COPY service ./service
# The CPU torch above already satisfies the extra's pin, so pip keeps it; the check makes sure.
# DL3013: "." is this project; its dependency pins live in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[torch]" \
    && python -c "import sys, torch; sys.exit(torch.version.cuda is not None)"

# Pinned to a commit so that rebuilding the same tag bakes the same weights. --onnx-only leaves out
# the torch weights: the runtime image serves ONNX and has no torch to read them.
ARG MODEL_ID=distilbert-base-uncased-finetuned-sst-2-english
ARG MODEL_REVISION=714eb0fa89d2f80546fda750413ed43d93601a13
RUN mlapi bake "$MODEL_ID" --revision "$MODEL_REVISION" --out /build/model --onnx-only


FROM python:3.11-slim-bookworm AS runtime-deps

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY service ./service
# DL3013: "." is this project; its dependency pins live in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[serve]"


FROM python:3.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="mlapi" \
      org.opencontainers.image.description="Hugging Face text model served as a cached prediction API (ONNX Runtime)"

# HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE: the model is baked in, so any hub access is a bug and must fail.
# Every cache and HOME point at /tmp, the only writable path under a read-only root filesystem.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HOME=/tmp/hf \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    MLAPI_MODEL_DIR=/opt/mlapi/model \
    MLAPI_BACKEND=onnx \
    MLAPI_HOST=0.0.0.0 \
    MLAPI_PORT=8000

# Numeric UID >= 10000 so that Kubernetes' runAsNonRoot can verify it (checkov CKV_K8S_40).
RUN groupadd --system --gid 10001 mlapi \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin mlapi

COPY --from=runtime-deps /opt/venv /opt/venv
# Owned by root and read-only for the service user.
COPY --from=bake /build/model /opt/mlapi/model

# ECS Fargate bind-mounts the task's "tmp" volume here (the root filesystem is read-only); declaring the
# volume makes Fargate copy the image's sticky, world-writable /tmp instead of mounting it root-owned 0755.
RUN chmod 1777 /tmp
VOLUME ["/tmp"]
WORKDIR /tmp
USER 10001:10001

EXPOSE 8000

# No curl in a slim image: the standard library does the request. Any non-2xx or refused
# connection raises, which exits non-zero.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s%s/health' % (os.environ.get('MLAPI_PORT', '8000'), os.environ.get('MLAPI_PATH_PREFIX', '')), timeout=4)"]

# Exec form: mlapi is PID 1 and receives SIGTERM itself (it drains and exits).
STOPSIGNAL SIGTERM
ENTRYPOINT ["mlapi", "serve"]
