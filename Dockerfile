# The one charops image: library, CLI, KFP components, training (DeepSpeed) and serving stack.
# Every pipeline component names it as base_image (charops.pipeline.image.default_image()).
#
#   docker build -t ghcr.io/charops/charops:0.1.0 .                                # CUDA torch
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu \
#                -t charops:0.1.0-cpu .                                           # CPU only
#   docker build --build-arg CHAROPS_IMAGE=registry.example.com/ml/charops:0.1.0 \
#                -t registry.example.com/ml/charops:0.1.0 .                       # own registry
#
# CHAROPS_VERSION must equal charops.__version__ (tests/unit/test_dockerfile.py checks it).

ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim

ARG CHAROPS_VERSION=0.1.0
# Where this image is pushed; compiled pipelines inside the image point their components here.
ARG CHAROPS_IMAGE=ghcr.io/charops/charops:${CHAROPS_VERSION}
# torch comes first and from its own index so pip never swaps it: CUDA by default, the CPU
# index for laptops/CI. The rest of the stack is pinned by pyproject.toml's extras.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CHAROPS_IMAGE=${CHAROPS_IMAGE}

# A compiler and ninja: DeepSpeed JIT-compiles its fused ops (Adam, ZeRO-offload) on first use.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential ninja-build git \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 --shell /bin/bash charops

RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

WORKDIR /opt/charops
COPY pyproject.toml README.md ./
COPY src ./src
COPY cli ./cli
COPY components ./components
COPY configs ./configs
RUN pip install ".[train,pipelines,serve]" \
    && python -c "import charops, sys; assert charops.__version__ == '${CHAROPS_VERSION}', charops.__version__" \
    && charops version

# Compiled pipelines and manifests travel with the image for `charops submit` from a notebook pod.
COPY pipelines ./pipelines
COPY manifests ./manifests

USER 1000
ENV HOME=/home/charops \
    TORCH_EXTENSIONS_DIR=/home/charops/.cache/torch_extensions \
    HF_HOME=/home/charops/.cache/huggingface
WORKDIR /home/charops
CMD ["charops", "--help"]
