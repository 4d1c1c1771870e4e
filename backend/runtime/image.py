"""Images for the docker runtime.

A real deployment builds the production image from the repository's `Dockerfile`
(`docker build -t tradeops:latest .`). Where no registry is reachable, `build_local_image` makes
one with `docker import` from files on this machine: a rootfs of a few kilobytes (directories,
`/etc/passwd`, the loader cache, the `/bin` `/lib` symlinks of a merged-/usr host) whose entrypoint
is this interpreter running the services' entry point, `backend.services` (the runtime names every
container's entrypoint itself, from backend.runtime.commands). The interpreter, its installation,
the virtual environment and the source are not copied (the engine's storage driver may copy every
layer per container): the image names them in its `tradeops.mounts` label (colon-separated) and
the runtime bind-mounts them read-only at the same paths. It runs as the user who built it, so it
can write the data dir."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import backend
from backend.errors import TradeopsError
from backend.runtime.commands import service_entrypoint

LOCAL_IMAGE = "tradeops-local:latest"
LABEL_KIND = "tradeops.image"
LABEL_MOUNTS = "tradeops.mounts"
LABEL_FINGERPRINT = "tradeops.fingerprint"
_TOP_LINKS = ("bin", "sbin", "lib", "lib32", "lib64", "libx32")


@dataclass
class ImageSpec:
    """An image as the runtime uses it: its reference and the host paths to bind-mount read-only."""

    ref: str
    mounts: list[str] = field(default_factory=list)
    kind: str = "production"


def host_mounts() -> list[str]:
    """Host paths the local image needs at run time: /usr (and top-level library dirs that are not
    symlinks into it), the interpreter's installation, the virtual environment, the source."""
    paths = [Path("/usr")]
    paths += [Path("/", d) for d in _TOP_LINKS if Path("/", d).is_dir() and not Path("/", d).is_symlink()]
    paths += [Path(sys.base_prefix), Path(sys.prefix), Path(backend.__file__).resolve().parents[1]]
    out: list[Path] = []
    for p in sorted({Path(os.path.realpath(p)) for p in paths}, key=lambda p: len(p.parts)):
        if not any(p == o or o in p.parents for o in out):
            out.append(p)
    return [str(p) for p in out]


def _rootfs(uid: int, gid: int) -> bytes:
    """A deterministic tar of the minimal rootfs (same inputs, same bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:

        def add(name: str, kind: bytes, mode: int = 0o755, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.mtime, info.linkname = kind, mode, 0, link
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for d in ("etc", "usr", "proc", "sys", "dev", "run", "var", "home"):
            add(d, tarfile.DIRTYPE)
        for d in ("tmp", "var/tmp"):
            add(d, tarfile.DIRTYPE, 0o1777)
        for d in _TOP_LINKS:
            top = Path("/", d)
            if top.is_symlink():
                add(d, tarfile.SYMTYPE, 0o777, link=os.readlink(top))
        users = "root:x:0:0:root:/root:/bin/sh\n"
        groups = "root:x:0:\n"
        if uid:
            users += f"tradeops:x:{uid}:{gid}:tradeops:/tmp:/bin/sh\n"
            groups += f"tradeops:x:{gid}:\n"
        add("etc/passwd", tarfile.REGTYPE, 0o644, users.encode())
        add("etc/group", tarfile.REGTYPE, 0o644, groups.encode())
        cache = Path("/etc/ld.so.cache")
        if cache.is_file():
            add("etc/ld.so.cache", tarfile.REGTYPE, 0o644, cache.read_bytes())
    return buf.getvalue()


def _changes(mounts: list[str], uid: int, gid: int, fingerprint: str) -> list[str]:
    venv_bin = str(Path(sys.executable).parent)
    return [
        f"ENV PATH={venv_bin}:/usr/local/bin:/usr/bin:/bin",
        "ENV HOME=/tmp",
        "ENV PYTHONDONTWRITEBYTECODE=1",
        "ENV PYTHONUNBUFFERED=1",
        f"USER {uid}:{gid}",
        "WORKDIR /tmp",
        "ENTRYPOINT " + json.dumps(service_entrypoint(sys.executable)),
        f"LABEL {LABEL_KIND}=local",
        f"LABEL {LABEL_MOUNTS}=" + json.dumps(":".join(mounts)),
        f"LABEL {LABEL_FINGERPRINT}={fingerprint}",
    ]


def build_local_image(client: Any, ref: str = LOCAL_IMAGE, *, force: bool = False) -> tuple[ImageSpec, bool]:
    """Make (or reuse, when nothing changed) the local image; return it and whether it was built."""
    import docker.errors

    uid, gid = os.getuid(), os.getgid()
    mounts = host_mounts()
    rootfs = _rootfs(uid, gid)
    fingerprint = hashlib.sha256(rootfs + json.dumps(_changes(mounts, uid, gid, "")).encode()).hexdigest()[:16]
    if not force:
        try:
            have = client.images.get(ref)
            if (have.labels or {}).get(LABEL_FINGERPRINT) == fingerprint:
                return ImageSpec(ref, mounts, "local"), False
        except docker.errors.ImageNotFound:
            pass
    repo, _, tag = ref.rpartition(":") if ":" in ref.rsplit("/", 1)[-1] else (ref, "", "latest")
    try:
        client.api.import_image_from_data(
            rootfs, repository=repo, tag=tag, changes=_changes(mounts, uid, gid, fingerprint)
        )
    except docker.errors.APIError as exc:
        raise TradeopsError(f"docker import of {ref} failed: {exc.explanation or exc}") from None
    return ImageSpec(ref, mounts, "local"), True


def image_spec(client: Any, ref: str | None) -> ImageSpec:
    """The image to run: `ref` as it is (its `tradeops.mounts` label, if any, says what to
    bind-mount), or with no ref the local image, made when missing or out of date."""
    import docker.errors

    if ref is None:
        return build_local_image(client)[0]
    try:
        img = client.images.get(ref)
    except docker.errors.ImageNotFound:
        raise TradeopsError(
            f"image {ref!r} not found on the engine; `docker build -t {ref} .` makes the "
            f"production one, `tradeops image build-local` a local one"
        ) from None
    labels = img.labels or {}
    mounts = [m for m in labels.get(LABEL_MOUNTS, "").split(":") if m]
    missing = [m for m in mounts if not Path(m).exists()]
    if missing:
        raise TradeopsError(f"image {ref!r} needs host paths that do not exist here: {', '.join(missing)}")
    return ImageSpec(ref, mounts, labels.get(LABEL_KIND, "production"))
