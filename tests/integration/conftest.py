"""Integration fixtures: a Docker engine and the local image for the `docker` tests (see
tests/dockerd.py). The engine starts only when a docker test asks for it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.dockerd import SessionDockerd


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[str]:
    """DOCKER_HOST of a dockerd of this session; the test is skipped, with the reason, without one."""
    engine = SessionDockerd()
    why = engine.start()
    if why:
        engine.stop()
        pytest.skip(f"no Docker engine for the docker runtime tests: {why}")
    yield engine.host
    engine.stop()


@pytest.fixture(scope="session")
def local_image(docker_engine: str) -> str:
    """The local image (`docker import` of a tiny rootfs; Python, venv and source bind-mounted)."""
    from backend.runtime.docker import connect_engine
    from backend.runtime.image import build_local_image

    client = connect_engine(docker_engine)
    spec, _ = build_local_image(client)
    client.close()
    return spec.ref
