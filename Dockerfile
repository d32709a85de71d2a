# syntax=docker/dockerfile:1
#
# The prediction API image. Four stages:
#   model         a local checkpoint, when there is one: `--build-context model=DIR` replaces this stage
#                 with that directory alone (a named context wins over a stage of the same name).
#   bake          torch (CPU wheels) + the `torch` extra; runs `mlapi bake` once, at build time, so the
#                 model is inside the image and a starting container downloads nothing.
#   runtime-deps  a virtualenv with the `serve` extra only: onnxruntime, no torch, no compilers.
#   runtime       that virtualenv + the baked model, run as a fixed non-root UID; writes only to /tmp,
#                 so it runs with a read-only root filesystem.
#
# Build (docs/container.md), from the hub, a local checkpoint, or S3:
#   docker buildx build --build-arg MODEL_ID=org/name --build-arg MODEL_REVISION=<commit> -t mlapi .
#   docker buildx build --build-context model=./models/my-ft --build-arg MODEL_ID=/model-src \
#     --build-arg MODEL_REVISION= -t mlapi .
#   docker buildx build --build-arg MODEL_ID=s3://bucket/prefix --build-arg MODEL_REVISION= \
#     --secret id=aws_access_key_id,env=AWS_ACCESS_KEY_ID --secret id=aws_secret_access_key,env=AWS_SECRET_ACCESS_KEY \
#     --secret id=aws_session_token,env=AWS_SESSION_TOKEN -t mlapi .
# A private hub repo: add --secret id=hf_token,env=HF_TOKEN. Tokens and credentials are BuildKit secrets: mounted
# for the bake step only, never in a layer, the image history or a build arg.

# Empty unless replaced by the `model` named context: hub and S3 builds mount it and ignore it.
FROM scratch AS model
WORKDIR /empty


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

# MODEL_ID: a hub id pinned to a commit (so that rebuilding the same tag bakes the same weights), the mounted
# local checkpoint (/model-src), or s3://BUCKET/PREFIX; an empty MODEL_REVISION passes no --revision.
# MODEL_FINGERPRINT is the weights' digest (infra/model_source.py): a new one re-runs the bake instead of
# reusing its cache when an S3 prefix changed under the same name. AWS_REGION: the region S3 is reached in.
# --onnx-only leaves out the torch weights: the runtime image serves ONNX and has no torch to read them.
ARG MODEL_ID=distilbert/distilbert-base-uncased-finetuned-sst-2-english
ARG MODEL_REVISION=714eb0fa89d2f80546fda750413ed43d93601a13
ARG MODEL_FINGERPRINT
ARG AWS_REGION
RUN --mount=type=bind,from=model,target=/model-src \
    --mount=type=secret,id=hf_token,env=HF_TOKEN \
    --mount=type=secret,id=aws_access_key_id,env=AWS_ACCESS_KEY_ID \
    --mount=type=secret,id=aws_secret_access_key,env=AWS_SECRET_ACCESS_KEY \
    --mount=type=secret,id=aws_session_token,env=AWS_SESSION_TOKEN \
    mlapi bake "$MODEL_ID" ${MODEL_REVISION:+--revision "$MODEL_REVISION"} --out /build/model --onnx-only


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
