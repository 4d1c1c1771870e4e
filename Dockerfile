# The production image: `docker build -t tradeops:latest .`
#
# Any tradeops command runs in it (`docker run --rm tradeops:latest inventory`). The docker runtime
# (`tradeops up --runtime docker --image tradeops:latest`) and the compose file of `tradeops compose
# --image tradeops:latest` run a service in it with their own entrypoint, the services' entry point
# `python -m backend.services NAME --instance ... --environment ...` (backend/runtime/commands.py),
# and the container's health check `python -m backend.runtime.healthcheck SERVICE INSTANCE`.
# It runs as the non-root user `tradeops` (uid 10001): the data dir it is given (TRADEOPS_DATA_DIR,
# /data by default, or the host data dir the docker runtime bind-mounts) must be writable by it.
# Where no registry is reachable, `tradeops image build-local` makes a local image instead.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY pyproject.toml README.md ./
COPY backend ./backend
COPY console ./console
COPY gates ./gates
COPY widgets ./widgets
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    TRADEOPS_DATA_DIR=/data
RUN groupadd --gid 10001 tradeops \
    && useradd --uid 10001 --gid tradeops --home-dir /data --no-create-home --shell /usr/sbin/nologin tradeops \
    && install -d -o tradeops -g tradeops /data
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels
LABEL org.opencontainers.image.title="tradeops" \
      org.opencontainers.image.description="tradeops services, migration control plane and console" \
      tradeops.image="production"
VOLUME /data
WORKDIR /data
USER tradeops:tradeops
ENTRYPOINT ["tradeops"]
CMD ["--help"]
