"""Who may open the console in a browser (`tradeops serve`): the operators' logins, kept in the
data dir (`<data dir>/serve/users.json`, 0600 in a 0700 directory) as scrypt hashes of their
passwords, never the passwords. Each login names the SSH key its console signs with (a private key
file, or a .pub file whose key is in the server's ssh-agent), so a browser session acts and signs
as that operator and no other."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from backend.errors import TradeopsError
from backend.fileio import atomic_path

NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,31}$")
_N, _R, _P = 2**14, 8, 1  # scrypt cost: ~50 ms and 16 MiB per try
MIN_PASSWORD = 12


@dataclass
class User:
    name: str
    key: str
    """The signing key: a private key file, or a .pub whose key is in ssh-agent."""
    salt: str
    hash: str
    read_only: bool = False


def users_file(data_dir: Path) -> Path:
    return Path(data_dir) / "serve" / "users.json"


def _hash(password: str, salt: bytes) -> str:
    return hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, maxmem=64 * 1024 * 1024).hex()


# compared against when the name is unknown, so a wrong name takes as long as a wrong password
_DUMMY = User("", "", secrets.token_hex(16), "00" * 64)


class Users:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.users: dict[str, User] = {}
        self._stamp = self._mtime()
        if path.exists():
            try:
                raw = json.loads(path.read_text())
                self.users = {u["name"]: User(**u) for u in raw["users"]}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise TradeopsError(f"cannot read the console logins {path}: {exc}") from None

    def _mtime(self) -> float:
        try:
            return self.path.stat().st_mtime
        except OSError:
            return 0.0

    def refresh(self) -> None:
        """Read the file again when it changed (`serve add-user` / `remove-user` while serving);
        a file that cannot be read leaves nobody logged in."""
        stamp = self._mtime()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self.users = Users(self.path).users
            except TradeopsError:
                self.users = {}

    @classmethod
    def of(cls, data_dir: Path) -> Users:
        return cls(users_file(data_dir))

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.path.parent, 0o700)
        with atomic_path(self.path) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump({"users": [asdict(u) for u in self.users.values()]}, f, indent=1)

    def add(self, name: str, key: str, password: str | None = None, read_only: bool = False) -> str:
        """Add or replace `name`'s login; returns the password (a new random one unless given)."""
        if not NAME.match(name):
            raise TradeopsError(
                f"bad login name {name!r}: lower-case letters, digits, '.', '_' or '-', starting with a letter"
            )
        if password is None:
            password = secrets.token_urlsafe(18)
        if len(password) < MIN_PASSWORD:
            raise TradeopsError(f"the password for {name} is too short: at least {MIN_PASSWORD} characters")
        salt = secrets.token_bytes(16)
        self.users[name] = User(name, key, salt.hex(), _hash(password, salt), read_only)
        self.save()
        return password

    def remove(self, name: str) -> None:
        if name not in self.users:
            raise TradeopsError(f"no console login {name!r} (see `tradeops serve users`)")
        del self.users[name]
        self.save()

    def check(self, name: str, password: str) -> User | None:
        """The user when the password is theirs, else None (in constant time per try)."""
        user = self.users.get(name, _DUMMY)
        ok = hmac.compare_digest(_hash(password, bytes.fromhex(user.salt)), user.hash)
        return user if ok and user is not _DUMMY else None
