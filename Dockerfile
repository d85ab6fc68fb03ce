# Two images from one Dockerfile, each with only what its program imports:
#
#   docker build --target engine   -t edgepipe-engine:0.1.0 .    (the default target)
#   docker build --target operator -t edgepipe-operator:0.1.0 .
#
# Hosts that cannot pull python:3.11-slim pass another Debian-based Python 3.11 image:
#   --build-arg BASE=localhost/edgepipe-base:…   (scripts/testimage makes one)
# The same file builds for arm64 (--platform linux/arm64 and an arm64 base): pip takes the
# aarch64 wheels.
ARG BASE=python:3.11-slim

# --- a virtualenv and the tools to fill it; nothing here but /opt reaches an image ---
FROM ${BASE} AS venv
# pip trusts the system CA bundle (a build host may mount its own over it).
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
# strip (binutils), for pyarrow's libraries in the engine image (scripts/image-trim).
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null \
 && python3 -m venv /opt/edgepipe \
 && /opt/edgepipe/bin/pip install -q --upgrade pip
WORKDIR /src
# An extra's requirements, read from pyproject.toml and installed before any source is
# copied: a code change rebuilds only the small layers after them.
COPY pyproject.toml ./
COPY scripts/image-trim scripts/image-requirements ./scripts/

FROM venv AS engine-deps
RUN scripts/image-requirements engine >/tmp/requirements.txt \
 && /opt/edgepipe/bin/pip install -q -r /tmp/requirements.txt \
 && scripts/image-trim engine /opt/edgepipe

FROM venv AS operator-deps
RUN scripts/image-requirements operator >/tmp/requirements.txt \
 && /opt/edgepipe/bin/pip install -q -r /tmp/requirements.txt \
 && scripts/image-trim operator /opt/edgepipe

# --- edgepipe itself, without dependencies (they are above) ---
FROM scratch AS source
COPY pyproject.toml README.md /src/
COPY edgepipe /src/edgepipe
COPY engine /src/engine
COPY operator /src/operator

# (An emulated arm64 build starts this stage from its cached engine-deps image instead:
# scripts/testimage rewrites this one line.)
FROM engine-deps AS engine-venv
COPY --from=source /src /src
RUN /opt/edgepipe/bin/pip install -q --no-deps /src \
 && scripts/image-trim engine-code /opt/edgepipe \
 && /opt/edgepipe/bin/pip uninstall -q -y pip

FROM operator-deps AS operator-venv
COPY --from=source /src /src
RUN /opt/edgepipe/bin/pip install -q --no-deps /src \
 && scripts/image-trim operator-code /opt/edgepipe \
 && /opt/edgepipe/bin/pip uninstall -q -y pip

# --- what both images share: the base, a user, the virtualenv on PATH ---
FROM ${BASE} AS runtime
ENV PATH=/opt/edgepipe/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN useradd --system --uid 10001 --user-group --home-dir /var/cache/edgepipe --create-home \
      --shell /usr/sbin/nologin edgepipe
WORKDIR /var/cache/edgepipe

# --- edgepipe-operator: reconciles Pipelines and Publishes (the operator chart's image) ---
FROM runtime AS operator
COPY --from=operator-venv /opt/edgepipe /opt/edgepipe
USER 10001
CMD ["edgepipe-operator", "run"]

# --- edgepipe-engine: the inference server, in the cluster and at the edge (default) ---
FROM runtime AS engine
COPY --from=engine-venv /opt/edgepipe /opt/edgepipe
ENV EDGEPIPE_ENGINE_CACHE_DIR=/var/cache/edgepipe
USER 10001
VOLUME /var/cache/edgepipe
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health/ready', timeout=2).status != 200)"]
CMD ["edgepipe-engine"]
