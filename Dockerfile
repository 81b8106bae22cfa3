# syntax=docker/dockerfile:1
# The server image. Build: docker build -t commerce .
# Migrations are a separate, one-shot command (see deploy/compose.yaml):
#   docker run --rm -e DATABASE_URL=... commerce migrate
#   docker run -p 50051:50051 -e DATABASE_URL=... commerce

# --- build: install the project and its generated stubs into a virtualenv ---------
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/commerce
WORKDIR /src
COPY generated/ generated/
RUN /opt/commerce/bin/pip install ./generated
COPY pyproject.toml README.md ./
COPY services/ services/
RUN /opt/commerce/bin/pip install .

# --- runtime: the virtualenv, the migrations, an unprivileged user ----------------
FROM python:3.11-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin commerce
COPY --from=build /opt/commerce /opt/commerce
COPY migrations/ /app/migrations/
ENV PATH=/opt/commerce/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    COMMERCE_MIGRATIONS_DIR=/app/migrations \
    COMMERCE_LISTEN_ADDRESS=0.0.0.0:50051 \
    COMMERCE_METRICS_ADDRESS=0.0.0.0:9464 \
    COMMERCE_LOG_FORMAT=json
WORKDIR /app
USER commerce
EXPOSE 50051 9464
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s \
    CMD ["commerce", "health", "--address", "127.0.0.1:50051"]
# SIGTERM drains in-flight calls for COMMERCE_GRACE_SECONDS, then exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["commerce"]
CMD ["serve"]
