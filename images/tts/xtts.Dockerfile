# The TTS server with Coqui XTTS-v2 on an NVIDIA GPU, and Piper beside it. torch's PyPI wheels
# carry their CUDA 12.8 libraries; the NVIDIA base adds the driver settings of the NVIDIA
# container toolkit. No weights inside: mount an XTTS-v2 checkpoint at /models/xtts-v2 (or
# point PARLEY_TTS_XTTS_MODEL_DIR elsewhere). It is not built by `make images` (no Docker Hub
# there); build it where Docker Hub is reachable:
#   docker build --file images/tts/xtts.Dockerfile --tag ghcr.io/parley-voice/parley-tts:0.1.0-xtts .

# NVIDIA's CUDA 12.8 runtime on Ubuntu 22.04, pinned by tag and digest (the runtime's too).
ARG BASE_IMAGE=docker.io/nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04@sha256:17e2934e1fa96152b14f78078bfbafd0f00f391df995dc6c641a720fce1202bb

# Ubuntu 22.04's own Python 3.11 (universe; its default python3 is 3.10).
FROM ${BASE_IMAGE} AS python
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3.11=3.11.* python3.11-venv=3.11.* \
    && rm -rf /var/lib/apt/lists/*

# The parley wheel, built from the source.
FROM python AS wheel
ARG WHEELHOUSE=
COPY pyproject.toml README.md /src/
COPY parley /src/parley
COPY runtime/parley_runtime /src/runtime/parley_runtime
COPY tts/parley_tts /src/tts/parley_tts
COPY operator/parley_operator /src/operator/parley_operator
COPY bench/parley_bench /src/bench/parley_bench
COPY images/requirements/build.txt /tmp/build.txt
RUN python3.11 -m venv /opt/build \
    && /opt/build/bin/pip install --no-cache-dir --no-deps \
        ${WHEELHOUSE:+--no-index --find-links "$WHEELHOUSE"} -r /tmp/build.txt \
    && /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /dist /src

FROM python
ARG WHEELHOUSE=
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="parley-tts" \
      org.opencontainers.image.description="Parley's speech server: XTTS-v2 on CUDA, and Piper" \
      org.opencontainers.image.source="https://github.com/parley-voice/parley" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
ENV HOME=/home/parley XDG_CACHE_HOME=/home/parley/.cache PATH=/opt/parley/bin:$PATH \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PARLEY_TTS_HOST=0.0.0.0 \
    PARLEY_TTS_DEFAULT_MODEL=xtts PARLEY_TTS_XTTS_MODEL_DIR=/models/xtts-v2
# OpenAI-compatible /v1/audio/speech and /metrics.
EXPOSE 8000
ENTRYPOINT ["parley"]
CMD ["tts", "serve"]
# A fixed non-root user in group 0, whose home and caches group 0 may write: an arbitrary
# UID (OpenShift's restricted SCC runs one, always in group 0) works as well.
RUN useradd --uid 10001 --gid 0 --no-log-init --create-home --home-dir /home/parley \
        --shell /usr/sbin/nologin parley \
    && mkdir -p /home/parley/.cache/parley /home/parley/.cache/huggingface \
    && chmod -R g=u /home/parley
WORKDIR /home/parley
# Exactly the pinned packages (--no-deps: nothing is resolved at build time), then parley.
COPY images/requirements/xtts.txt /opt/requirements.txt
RUN python3.11 -m venv /opt/parley \
    && /opt/parley/bin/pip install --no-cache-dir --no-deps \
        ${WHEELHOUSE:+--no-index --find-links "$WHEELHOUSE"} -r /opt/requirements.txt
COPY --from=wheel /dist /tmp/dist
RUN /opt/parley/bin/pip install --no-cache-dir --no-deps /tmp/dist/parley-*.whl \
    && /opt/parley/bin/pip check \
    && rm -r /tmp/dist
USER 10001:0
