# syntax=docker/dockerfile:1
# The headrace image: every service (`headrace serve <name>`) and the CLI, one
# image. docker-compose.yml and the Helm chart (deploy/helm/headrace) run it.
#
#   docker build -t headrace:local .
#   docker run --rm headrace:local serve --help

ARG PYTHON_IMAGE=python:3.11-slim

# Build stage: headrace's own wheel, then a virtualenv of it and its
# dependencies. Every dependency ships manylinux wheels, so --only-binary keeps
# the slim base image free of compilers: a dependency without a wheel for this
# platform fails the build here instead of compiling by surprise.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY headrace ./headrace
RUN python -m venv /opt/headrace \
 && /opt/headrace/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/headrace/bin/pip install --only-binary=:all: /wheels/headrace-*.whl \
 && /opt/headrace/bin/headrace --help >/dev/null

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/headrace/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HEADRACE_HOME=/var/lib/headrace \
    HEADRACE_DATA_DIR=/var/lib/headrace/data \
    HEADRACE_LOG_FORMAT=json \
    HEADRACE_WEB_HOST=0.0.0.0
# A fixed non-root uid/gid: Kubernetes' runAsUser/fsGroup in the chart name
# the same numbers, and a fresh Docker volume takes this folder's owner.
RUN groupadd --system --gid 10001 headrace \
 && useradd --system --uid 10001 --gid headrace --home-dir /var/lib/headrace \
      --shell /usr/sbin/nologin headrace \
 && mkdir -p /var/lib/headrace/data \
 && chown -R headrace:headrace /var/lib/headrace
COPY --from=build /opt/headrace /opt/headrace
USER 10001:10001
WORKDIR /var/lib/headrace
# 8080: the query API; 6066-6072: /metrics and /healthz of the other services.
EXPOSE 8080 6066 6067 6068 6069 6071 6072
ENTRYPOINT ["headrace"]
CMD ["--help"]
