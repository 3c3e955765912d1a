# deploysignal HTTP service (`deploysignal serve`): docs/deploy.md.
#   docker build -t deploysignal:0.4.0 .
#   docker run -p 8080:8080 -v deploysignal-data:/data deploysignal:0.4.0
# The first start creates the SQLite store in /data and, without a tokens file, generates the tokens
# in /data/.deploysignal (the log says where). tests/service/test_packaging.py runs these steps.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    NUMBA_CACHE_DIR=/var/cache/deploysignal/numba

WORKDIR /opt/deploysignal
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m pip install ".[service]"
# compile the gate's numba kernels once, into the image's on-disk cache (a first tick in ms, not seconds)
RUN deploysignal demo step
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin deploysignal \
 && mkdir -p /data \
 && chown -R 10001:10001 /data /var/cache/deploysignal

USER 10001
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["deploysignal", "serve", "--host", "0.0.0.0", "--port", "8080"]
CMD ["--create", "--store", "sqlite:////data/deploysignal.db"]
