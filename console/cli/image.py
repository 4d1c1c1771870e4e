"""`tradeops image build-local`: the docker runtime's local image, made with `docker import`
(no registry needed; see `backend.runtime.image`). The production image is `docker build .`."""

from __future__ import annotations

import argparse
from typing import Any

from console.cli.context import Context, command

ORDER = 11


def register(sub: Any) -> None:
    p = command(sub, "image", "the docker runtime's image: build-local makes one with `docker import`")
    isub = p.add_subparsers(dest="image_command", metavar="ACTION", required=True, parser_class=type(p))
    b = command(isub, "build-local", "make the local image from this machine's Python, venv and source")
    b.add_argument("--tag", default=None, help="image reference (default tradeops-local:latest)")
    b.add_argument("--force", action="store_true", help="make it even when an identical one exists")
    b.set_defaults(func=cmd_build_local)


def cmd_build_local(ctx: Context, args: argparse.Namespace) -> int:
    from backend.runtime.docker import connect_engine, engine_address
    from backend.runtime.image import LOCAL_IMAGE, build_local_image

    client = connect_engine()
    spec, built = build_local_image(client, args.tag or LOCAL_IMAGE, force=args.force)
    img = client.images.get(spec.ref)
    print(
        f"{'built' if built else 'up to date'}: {spec.ref} ({img.short_id}, {img.attrs.get('Size', 0)} bytes) "
        f"on {engine_address()}; bind-mounted read-only at run time: {', '.join(spec.mounts)}"
    )
    return 0
