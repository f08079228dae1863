# The modelmon image: one image, three commands (exporter, demo traffic, on-call receiver).
# Built from this repository's own files only; docker-compose.yml runs it.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Unprivileged user; /data belongs to it so that fresh named volumes mounted there inherit that owner.
RUN groupadd --system --gid 10001 modelmon \
 && useradd --system --uid 10001 --gid modelmon --no-create-home --home-dir /data \
      --shell /usr/sbin/nologin modelmon \
 && mkdir -p /data \
 && chown modelmon:modelmon /data

WORKDIR /src

# Dependencies in their own layer, read from pyproject.toml, so a code change does not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

COPY README.md ./
COPY modelmon/ modelmon/
RUN pip install --no-deps . && rm -rf /src/build

# The demo config and the reference data it points at (paths resolve against the config's folder).
COPY modelmon.yaml /etc/modelmon/modelmon.yaml
COPY examples/ /etc/modelmon/examples/

USER modelmon
WORKDIR /data
EXPOSE 9188

HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9188/healthz', timeout=4)"]

ENTRYPOINT ["modelmon"]
CMD ["serve", "--config", "/etc/modelmon/modelmon.yaml", "--log", "/data/predictions.jsonl", "--host", "0.0.0.0"]
