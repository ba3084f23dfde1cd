# eventgate container image. The build stage installs the locked dependencies and eventgate into
# /opt/eventgate with uv; the final stage copies only that environment and runs as a non-root user
# (uid 10001, the manifest's runAsUser). Bytecode is compiled at build time, so the root filesystem
# can be read-only; the data dir (python function images and sources) is a volume.
FROM python:3.11-slim AS build
RUN pip install --no-cache-dir "uv==0.13.9"
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY src ./src
ENV UV_PROJECT_ENVIRONMENT=/opt/eventgate
RUN uv sync --frozen --no-dev --no-editable --compile-bytecode \
    && /opt/eventgate/bin/eventgate --version

FROM python:3.11-slim
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/eventgate eventgate
COPY --from=build /opt/eventgate /opt/eventgate
ENV PATH="/opt/eventgate/bin:${PATH}" \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    EVENTGATE_DATA_DIR=/var/lib/eventgate
USER eventgate
EXPOSE 4000 4001
ENTRYPOINT ["eventgate"]
CMD ["serve", "--host=0.0.0.0"]
