"""SSH keys the tests generate (ssh-keygen), and a registry of operators signed with them.

`keys(name, kind)` makes (once per session) a key pair for `name` and returns its Signer (signing
with the private key file); `enrol` initialises the registry with a first lead and adds the others.
Without ssh-keygen the tests that sign are skipped, with the reason."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import pytest
import redis

from gates import operators, signing
from gates.signing import Signer

NO_SSH_KEYGEN = "ssh-keygen (openssh-client) is not installed: it signs operator actions"


class Keys:
    def __init__(self, d: Path) -> None:
        self.d = d
        self._made: dict[tuple[str, str], Signer] = {}

    def path(self, name: str, kind: str = "ed25519") -> Path:
        self(name, kind)
        return self.d / f"{name}_{kind}"

    def __call__(self, name: str, kind: str = "ed25519") -> Signer:
        if (name, kind) not in self._made:
            f = self.d / f"{name}_{kind}"
            subprocess.run(
                ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", f"{name}@test", "-f", str(f)],
                check=True,
                capture_output=True,
            )
            self._made[(name, kind)] = signing.signer_for(str(f))
        return self._made[(name, kind)]


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    if not shutil.which("ssh-keygen"):
        pytest.skip(NO_SSH_KEYGEN)
    return Keys(tmp_path_factory.mktemp("keys"))


def enrol(
    r: redis.Redis, keys: Keys, lead: str = "lee", others: Iterable[str] = ("ann", "bob"), leads: Iterable[str] = ()
) -> None:
    """The registry: `lead` set at init, `others` added as operators, `leads` added as leads
    (the second lead needs no confirmation; a third would)."""
    operators.change(r, keys(lead), "init", lead, roles=["operator", "lead"], keys=[keys(lead).public])
    for n in leads:
        operators.change(r, keys(lead), "add", n, roles=["operator", "lead"], keys=[keys(n).public])
    for n in others:
        operators.change(r, keys(lead), "add", n, roles=["operator"], keys=[keys(n).public])


@pytest.fixture
def team(r: redis.Redis, keys: Keys) -> Keys:
    """lee (lead), ann and bob (operators), registered."""
    enrol(r, keys)
    return keys
