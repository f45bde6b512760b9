# One file, two images:
#   docker build --target worker   -t nsq-operator/worker:0.1.0 .    (the default target)
#   docker build --target operator -t nsq-operator/operator:0.1.0 .
# PYTHON_BASE is any image with CPython 3.11 and the venv module; the test rig passes one it made
# from Debian packages because it cannot reach a registry.
ARG PYTHON_BASE=python:3.11-slim-bookworm

# ---- builder: uv, the lock file, and nothing that reaches a final image -----------------------
FROM ${PYTHON_BASE} AS build-base
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Optional CA bundle for builds behind an intercepting proxy (see docker/build-extra/README.md).
COPY docker/build-extra/ /build-extra/
SHELL ["/bin/sh", "-eu", "-c"]
RUN if [ -f /build-extra/ca.pem ]; then export PIP_CERT=/build-extra/ca.pem; fi; \
    python3 -m venv /opt/uv; \
    /opt/uv/bin/pip install --no-cache-dir uv==0.13.8
COPY pyproject.toml uv.lock ./
COPY worker/pyproject.toml worker/
COPY operator/pyproject.toml operator/

FROM build-base AS build-worker
# Dependencies first, so editing the code does not reinstall gevent.
RUN if [ -f /build-extra/ca.pem ]; then export SSL_CERT_FILE=/build-extra/ca.pem; fi; \
    /opt/uv/bin/uv sync --frozen --no-dev --no-cache --package nsq-worker --no-install-workspace
COPY worker/ worker/
RUN if [ -f /build-extra/ca.pem ]; then export SSL_CERT_FILE=/build-extra/ca.pem; fi; \
    /opt/uv/bin/uv sync --frozen --no-dev --no-cache --package nsq-worker --no-editable

FROM build-base AS build-operator
RUN if [ -f /build-extra/ca.pem ]; then export SSL_CERT_FILE=/build-extra/ca.pem; fi; \
    /opt/uv/bin/uv sync --frozen --no-dev --no-cache --package nsq-operator --no-install-workspace
COPY operator/ operator/
RUN if [ -f /build-extra/ca.pem ]; then export SSL_CERT_FILE=/build-extra/ca.pem; fi; \
    /opt/uv/bin/uv sync --frozen --no-dev --no-cache --package nsq-operator --no-editable

# ---- runtime: the base, a virtualenv, a numeric non-root user ----------------------------------
FROM ${PYTHON_BASE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
WORKDIR /app

FROM runtime AS operator
COPY --from=build-operator /opt/venv /opt/venv
USER 10001:10001
ENTRYPOINT ["nsq-operator"]
CMD ["run", "--all-namespaces"]

FROM runtime AS worker
COPY --from=build-worker /opt/venv /opt/venv
USER 10001:10001
EXPOSE 8080
# `docker run <image> package.module:WorkerClass --topic ... --channel ... --nsqd-tcp-address ...`
ENTRYPOINT ["nsq-worker"]
CMD ["--help"]
