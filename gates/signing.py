"""SSH signatures of operator actions, in the SSHSIG format of `ssh-keygen -Y sign` (OpenSSH's
PROTOCOL.sshsig), so that an auditor can check any one of them with plain `ssh-keygen -Y verify`.

Signing runs `ssh-keygen -Y sign`: with a public key file and SSH_AUTH_SOCK it signs in the
operator's ssh-agent (hardware keys and passphrases work unchanged), or with a private key file.
Verifying parses the SSHSIG blob and checks the signature with the `cryptography` package's
primitives, for every key kind an operator may register: ssh-ed25519, ecdsa-sha2-nistp256/384/521,
ssh-rsa (rsa-sha2-256/512 signatures only, as ssh-keygen requires) and the FIDO kinds
sk-ssh-ed25519@openssh.com and sk-ecdsa-sha2-nistp256@openssh.com (user presence required, as
ssh-keygen requires unless told otherwise). Verification runs in-process (tens of microseconds a
signature), so the whole log can be checked on every read; tests check it against ssh-keygen.

Each kind of record has its own namespace, so a signature made for one kind cannot be replayed as
another: gate@tradeops (gate events), operators@tradeops (the registry), anchor@tradeops
(checkpoints), migration@tradeops (moves), control@tradeops (kill switch toggles)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa, utils

from backend.errors import TradeopsError

NS_GATE = "gate@tradeops"
NS_OPERATORS = "operators@tradeops"
NS_ANCHOR = "anchor@tradeops"
NS_MIGRATION = "migration@tradeops"
NS_CONTROL = "control@tradeops"

ED25519 = "ssh-ed25519"
RSA = "ssh-rsa"
SK_ED25519 = "sk-ssh-ed25519@openssh.com"
SK_ECDSA = "sk-ecdsa-sha2-nistp256@openssh.com"
_CURVES: dict[str, tuple[ec.EllipticCurve, hashes.HashAlgorithm]] = {
    "nistp256": (ec.SECP256R1(), hashes.SHA256()),
    "nistp384": (ec.SECP384R1(), hashes.SHA384()),
    "nistp521": (ec.SECP521R1(), hashes.SHA512()),
}
KINDS = (ED25519, *(f"ecdsa-sha2-{c}" for c in _CURVES), RSA, SK_ED25519, SK_ECDSA)
_ARMOR = ("-----BEGIN SSH SIGNATURE-----", "-----END SSH SIGNATURE-----")
_SK_USER_PRESENT = 0x01


class SigningError(TradeopsError):
    """No usable key, or ssh-keygen could not sign; the message says what to do."""


class BadSignature(Exception):
    """A signature that does not verify; the message says why."""


def nonce() -> str:
    return secrets.token_hex(16)


class _Reader:
    def __init__(self, buf: bytes) -> None:
        self.buf, self.pos = buf, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            raise BadSignature("truncated")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def u8(self) -> int:
        return self.take(1)[0]

    def string(self) -> bytes:
        return self.take(self.u32())

    def mpint(self) -> int:
        return int.from_bytes(self.string(), "big", signed=True)

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise BadSignature("trailing bytes")


def _string(b: bytes) -> bytes:
    return struct.pack(">I", len(b)) + b


@dataclass(frozen=True)
class PublicKey:
    """An SSH public key: its kind, its wire blob, and the comment it came with (not part of it)."""

    kind: str
    blob: bytes
    comment: str = ""

    @property
    def fingerprint(self) -> str:
        """As `ssh-keygen -l` prints it: SHA256:<base64, no padding>."""
        return "SHA256:" + base64.b64encode(hashlib.sha256(self.blob).digest()).decode().rstrip("=")

    @property
    def line(self) -> str:
        """The key as an authorized_keys / allowed_signers field: `kind base64` (no comment)."""
        return f"{self.kind} {base64.b64encode(self.blob).decode()}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.blob == self.blob

    def __hash__(self) -> int:
        return hash(self.blob)


def parse_public_key(text: str) -> PublicKey:
    """A key from one line of a .pub file (`kind base64 [comment]`); ValueError naming what is wrong."""
    parts = text.strip().split(None, 2)
    if len(parts) < 2:
        raise ValueError("not an SSH public key (expected `kind base64 [comment]`)")
    kind, b64 = parts[0], parts[1]
    if kind not in KINDS:
        raise ValueError(f"key kind {kind!r} is not one of {', '.join(KINDS)}")
    try:
        blob = base64.b64decode(b64, validate=True)
    except binascii.Error:
        raise ValueError("the key's base64 does not decode") from None
    try:
        _load(blob)
    except (BadSignature, ValueError) as exc:
        raise ValueError(f"not a valid {kind} key: {exc}") from None
    if _Reader(blob).string().decode(errors="replace") != kind:
        raise ValueError(f"the key's blob is not of kind {kind}")
    return PublicKey(kind, blob, parts[2] if len(parts) > 2 else "")


def read_public_key(path: str | os.PathLike[str]) -> PublicKey:
    p = Path(path).expanduser()
    if not p.is_file():
        raise SigningError(f"{p}: no such public key file")
    try:
        return parse_public_key(p.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise SigningError(f"{p}: {exc}") from None


def _load(blob: bytes) -> tuple[str, object, bytes]:
    """(kind, the cryptography key, the FIDO application or b"") from a public key blob."""
    rd = _Reader(blob)
    kind = rd.string().decode(errors="replace")
    app = b""
    key: object
    if kind in (ED25519, SK_ED25519):
        key = ed25519.Ed25519PublicKey.from_public_bytes(rd.string())
    elif kind.startswith("ecdsa-sha2-") or kind == SK_ECDSA:
        curve = rd.string().decode(errors="replace")
        if (
            curve not in _CURVES
            or (kind != SK_ECDSA and kind != f"ecdsa-sha2-{curve}")
            or (kind == SK_ECDSA and curve != "nistp256")
        ):
            raise BadSignature(f"curve {curve!r} does not match key kind {kind}")
        key = ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[curve][0], rd.string())
    elif kind == RSA:
        e, n = rd.mpint(), rd.mpint()
        key = rsa.RSAPublicNumbers(e, n).public_key()
        if key.key_size < 2048:
            raise BadSignature(f"RSA key of {key.key_size} bits (2048 at least)")
    else:
        raise BadSignature(f"unsupported key kind {kind!r}")
    if kind in (SK_ED25519, SK_ECDSA):
        app = rd.string()
    rd.end()
    return kind, key, app


def dearmor(armored: str) -> bytes:
    lines = [ln.strip() for ln in armored.strip().splitlines()]
    if len(lines) < 3 or lines[0] != _ARMOR[0] or lines[-1] != _ARMOR[1]:
        raise BadSignature("not an armored SSH signature")
    try:
        return base64.b64decode("".join(lines[1:-1]), validate=True)
    except binascii.Error:
        raise BadSignature("the signature's base64 does not decode") from None


def verify(message: bytes, armored: str, namespace: str) -> PublicKey:
    """Check an SSHSIG signature of `message` in `namespace`: the signer's public key, or
    BadSignature. (Whether that key may sign is the registry's question, not this one.)"""
    rd = _Reader(dearmor(armored))
    if rd.take(6) != b"SSHSIG" or rd.u32() != 1:
        raise BadSignature("not an SSHSIG version 1 signature")
    blob, ns, reserved, hash_alg, sig = rd.string(), rd.string(), rd.string(), rd.string(), rd.string()
    rd.end()
    if ns != namespace.encode():
        raise BadSignature(f"signed for namespace {ns.decode(errors='replace')!r}, not {namespace!r}")
    if hash_alg not in (b"sha256", b"sha512"):
        raise BadSignature(f"hash algorithm {hash_alg.decode(errors='replace')!r}")
    h = hashlib.new(hash_alg.decode(), message).digest()
    signed = b"SSHSIG" + _string(ns) + _string(reserved) + _string(hash_alg) + _string(h)
    try:
        kind, key, app = _load(blob)
    except ValueError as exc:
        raise BadSignature(f"bad public key: {exc}") from None
    srd = _Reader(sig)
    sig_kind = srd.string().decode(errors="replace")
    raw = srd.string()
    try:
        if kind in (SK_ED25519, SK_ECDSA):
            if sig_kind != kind:
                raise BadSignature(f"a {sig_kind} signature for a {kind} key")
            flags, counter = srd.u8(), srd.u32()
            srd.end()
            if not flags & _SK_USER_PRESENT:
                raise BadSignature("the security key did not confirm user presence")
            data = (
                hashlib.sha256(app).digest()
                + bytes([flags])
                + struct.pack(">I", counter)
                + hashlib.sha256(signed).digest()
            )
            if isinstance(key, ed25519.Ed25519PublicKey):
                key.verify(raw, data)
            else:
                assert isinstance(key, ec.EllipticCurvePublicKey)
                key.verify(_der(raw), data, ec.ECDSA(hashes.SHA256()))
        else:
            srd.end()
            if isinstance(key, ed25519.Ed25519PublicKey):
                if sig_kind != ED25519:
                    raise BadSignature(f"a {sig_kind} signature for an {kind} key")
                key.verify(raw, signed)
            elif isinstance(key, ec.EllipticCurvePublicKey):
                if sig_kind != kind:
                    raise BadSignature(f"a {sig_kind} signature for an {kind} key")
                key.verify(_der(raw), signed, ec.ECDSA(_CURVES[kind.removeprefix("ecdsa-sha2-")][1]))
            else:
                assert isinstance(key, rsa.RSAPublicKey)
                algs: dict[str, hashes.HashAlgorithm] = {
                    "rsa-sha2-256": hashes.SHA256(),
                    "rsa-sha2-512": hashes.SHA512(),
                }
                if sig_kind not in algs:
                    raise BadSignature(f"RSA signature of kind {sig_kind!r} (rsa-sha2-256/512 only)")
                key.verify(raw, signed, padding.PKCS1v15(), algs[sig_kind])
    except InvalidSignature:
        raise BadSignature("the signature does not match the signed content") from None
    return PublicKey(kind, blob)


def _der(raw: bytes) -> bytes:
    rd = _Reader(raw)
    r_, s_ = rd.mpint(), rd.mpint()
    rd.end()
    return utils.encode_dss_signature(r_, s_)


def ssh_keygen() -> str:
    exe = shutil.which("ssh-keygen")
    if not exe:
        raise SigningError("ssh-keygen is not installed (package openssh-client): it signs operator actions")
    return exe


def agent_keys() -> list[PublicKey]:
    """The keys the operator's ssh-agent holds (SSH_AUTH_SOCK), in its order; [] without one."""
    if not os.environ.get("SSH_AUTH_SOCK") or not shutil.which("ssh-add"):
        return []
    out = subprocess.run(["ssh-add", "-L"], capture_output=True, text=True, timeout=10)
    keys = []
    for ln in out.stdout.splitlines() if out.returncode == 0 else []:
        try:
            keys.append(parse_public_key(ln))
        except ValueError:
            continue
    return keys


class Signer:
    """Signs with one key: in the ssh-agent (`key_file` None, or a .pub file) or a private key file."""

    def __init__(self, public: PublicKey, key_file: str | None = None) -> None:
        self.public = public
        self.key_file = key_file

    @property
    def fingerprint(self) -> str:
        return self.public.fingerprint

    @property
    def where(self) -> str:
        return self.key_file if self.key_file and not self.key_file.endswith(".pub") else "ssh-agent"

    def sign(self, message: bytes, namespace: str) -> str:
        with tempfile.TemporaryDirectory(prefix="tradeops-sign-") as tmp:
            key = self.key_file
            if key is None:
                key = os.path.join(tmp, "key.pub")
                Path(key).write_text(self.public.line + "\n")
            try:
                out = subprocess.run(
                    [ssh_keygen(), "-q", "-Y", "sign", "-n", namespace, "-f", key],
                    input=message,
                    capture_output=True,
                    timeout=120,
                    start_new_session=True,
                )  # no tty: a passphrase prompt fails, it does not hang
            except subprocess.TimeoutExpired:
                raise SigningError(
                    f"ssh-keygen did not sign within 120 s with {self.fingerprint} "
                    f"(a security key waiting for a touch?)"
                ) from None
        if out.returncode != 0:
            err = out.stderr.decode(errors="replace").strip().splitlines()
            hint = (
                " (a key with a passphrase: add it to ssh-agent with ssh-add)"
                if self.key_file and not self.key_file.endswith(".pub")
                else " (is the key in the ssh-agent? ssh-add -l)"
            )
            last = err[-1] if err else "ssh-keygen failed"
            raise SigningError(f"could not sign with {self.fingerprint}: {last}{hint}")
        armored = out.stdout.decode()
        verify(message, armored, namespace)  # what we record must verify
        return armored


def signer_for(key: str | None = None, known: set[str] | None = None) -> Signer:
    """The operator's signer: `key` (a private key file, or a .pub file whose key is in the
    ssh-agent), else the first key in the ssh-agent whose fingerprint is in `known` (the
    registry), else the agent's only key. SigningError says what to do when there is none."""
    if key:
        p = Path(key).expanduser()
        if not p.is_file():
            raise SigningError(f"signing key {p}: no such file")
        if p.suffix == ".pub":
            return Signer(read_public_key(p), str(p))
        pub = Path(str(p) + ".pub")
        if pub.is_file():
            return Signer(read_public_key(pub), str(p))
        out = subprocess.run(
            [ssh_keygen(), "-y", "-f", str(p)], capture_output=True, text=True, timeout=30, start_new_session=True
        )
        if out.returncode != 0:
            raise SigningError(
                f"signing key {p}: cannot read its public half (no {pub.name}; "
                f"a passphrase? put the key in ssh-agent and name the .pub file)"
            )
        return Signer(parse_public_key(out.stdout), str(p))
    keys = agent_keys()
    if known is not None:
        mine = [k for k in keys if k.fingerprint in known]
        if mine:
            return Signer(mine[0])
    if len(keys) == 1:
        return Signer(keys[0])
    if not keys:
        raise SigningError(
            "no signing key: give --key FILE (or signing_key in the config), or add your key "
            "to ssh-agent (ssh-add) with SSH_AUTH_SOCK set"
        )
    raise SigningError(f"the ssh-agent holds {len(keys)} keys and none is registered: give --key FILE.pub")
