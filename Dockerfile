# The linkwatch worker image: `docker build -t linkwatch .` (deploy/README.md).
# The builder makes a wheel and installs it with its dependencies into a venv; the runtime
# stage gets only that venv, runs as an unprivileged user and keeps its state in one volume.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streams ./streams
COPY agents ./agents
COPY graph ./graph
# gcc for mypyc: the modules whose first line says "mypyc: compiled" are compiled as
# `make compile` does, in a build venv, and copied next to their sources in the runtime
# venv (touched, so graph/__init__.py sees them newer than their sources).
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/linkwatch \
 && /opt/linkwatch/bin/pip install --upgrade pip \
 && /opt/linkwatch/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/linkwatch/bin/pip install /wheels/linkwatch-*.whl \
 && python -m venv /opt/build \
 && /opt/build/bin/pip install /wheels/linkwatch-*.whl mypy==2.4.1 \
 && /opt/build/bin/mypyc $(grep -l '^# mypyc: compiled' graph/*.py) \
 && site=$(/opt/linkwatch/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))') \
 && cp graph/*.so "$site/graph/" \
 && cp ./*__mypyc*.so "$site/" \
 && touch "$site"/graph/*.so \
 && /opt/linkwatch/bin/python -c 'import graph, sys; sys.exit(not graph.compiled())' \
 && /opt/linkwatch/bin/linkwatch --help >/dev/null

FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/linkwatch/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    LINKWATCH_WEB_HOST=0.0.0.0 \
    LINKWATCH_WEB_PORT=6066 \
    LINKWATCH_DATA_DIR=/var/lib/linkwatch
RUN groupadd --system --gid 10001 linkwatch \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/linkwatch --no-create-home \
      --shell /usr/sbin/nologin linkwatch \
 && mkdir -p /var/lib/linkwatch \
 && chown 10001:10001 /var/lib/linkwatch
COPY --from=builder /opt/linkwatch /opt/linkwatch
USER 10001:10001
WORKDIR /var/lib/linkwatch
# The intake journal (sqlite) and Faust's data dir.
VOLUME ["/var/lib/linkwatch"]
EXPOSE 6066
# No curl in the slim image; the venv's Python asks the worker's own health page.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:6066/healthz', timeout=4)"]
ENTRYPOINT ["linkwatch"]
CMD ["worker"]
