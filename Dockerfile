# syntax=docker/dockerfile:1
# One image for every tokendist process in docker-compose.yml (setup, relay, consumer,
# simulator): the entrypoint is the `tokendist` CLI and the container's command is the
# subcommand, e.g. `docker run --env-file ... tokendist:local relay`.

# ---------------------------------------------------------------- build
FROM python:3.11-slim AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
# Every dependency ships binary wheels for linux x86_64 and aarch64: no compiler needed.
RUN python -m venv /opt/tokendist
ENV PATH=/opt/tokendist/bin:$PATH

WORKDIR /src
# Only what `pip install .` packages (pyproject's packages.find.include), so editing
# tests, docs or the stack scripts does not invalidate this layer.
COPY pyproject.toml ./
COPY tokendist/ tokendist/
RUN pip install .

# The contract artifacts and the migrations are package data: check from / (so the source
# tree in /src is not what gets imported) that the installed package finds them.
RUN cd / \
    && python -c "from tokendist.consumer.contracts import artifact; artifact('Distributor'); artifact('PropertyToken')" \
    && python -c "from tokendist.core.db import migration_files; assert migration_files()" \
    && tokendist --help >/dev/null

# ---------------------------------------------------------------- runtime
FROM python:3.11-slim

ENV PATH=/opt/tokendist/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN groupadd --system --gid 10001 tokendist \
    && useradd --system --uid 10001 --gid tokendist --create-home --home-dir /home/tokendist \
       --shell /usr/sbin/nologin tokendist

# The virtualenv holds the project, its dependencies, its ABIs and migrations.
COPY --from=build /opt/tokendist /opt/tokendist

# Numeric, so orchestrators can verify "runAsNonRoot" without resolving names.
USER 10001:10001
WORKDIR /home/tokendist

# TOKENDIST_METRICS_PORT for `relay` and `consume`: /healthz, /readyz, /metrics.
# TOKENDIST_WEBHOOK_PORT for `webhook` (set TOKENDIST_WEBHOOK_HOST=0.0.0.0 in a container).
EXPOSE 9100 8088

ENTRYPOINT ["tokendist"]
CMD ["--help"]
