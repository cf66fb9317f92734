"""Key material: one 32-byte secret per role, from a private key file or the environment.

Keys never live in code or configuration; `conf/` only says where to find them
(`keys.directory` and one environment variable per role, `config.KeySettings`).

Roles and what their 32 bytes are for:

    linkage    HMAC-SHA256 key of the linkage hashes (`keyed_hash.keyed_hashes`)
    vault      AES-256-GCM key of the identity vault and the quarantine's raw content
    pseudonym  HKDF-SHA256 master secret; each data-sharing agreement gets its own key
               (`keyed_hash.derived_key_frame`), so pseudonyms never join across agreements
    transport  seed of the safe haven's transport key pairs that providers encrypt to
               (`envelope`); the private keys are derived from it, never stored apart

Key directory layout, as written by `caredata keys generate`:

    linkage.key  vault.key  pseudonym.key  transport.key   32 random bytes each, mode 0600
    transport.pub                                          public key text for providers

An environment variable (`CAREDATA_<ROLE>_KEY`, standard padded base64 of the 32 bytes)
wins over the file when set, so a scheduler can inject keys from its secret store.
Key files readable by group or others are refused, as ssh refuses private keys.

The transport seed expands with HKDF-SHA256 (no salt) into three private keys, so one
32-byte secret backs both envelope suites and a private key can never be paired with the
wrong public key: info `caredata transport x25519 v1` (32 bytes, X25519 of the classical
suite), `caredata transport mlkem768 v1` (64 bytes, ML-KEM-768 seed d||z) and
`caredata transport hybrid x25519 v1` (32 bytes, X25519 half of the hybrid suite).

`transport.pub` is text: comment lines, then two PEM-style blocks holding raw public keys
in base64: `CAREDATA X25519 PUBLIC KEY` (32 bytes) and `CAREDATA MLKEM768-X25519 PUBLIC
KEY` (1184-byte ML-KEM-768 key followed by the 32-byte X25519 key, the X-Wing order).
Its key id is the first 8 bytes of SHA-256 over the three public keys in that order; an
envelope names it so a wrong key is reported as such.

Errors name the role, the file or variable and the reason, never key bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.hpke import MLKEM768X25519PrivateKey, MLKEM768X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from caredata_spark.config import KeySettings
from caredata_spark.errors import UsageError

KEY_BYTES = 32
PRIVATE_MODE = 0o600
PUBLIC_FILE = "transport.pub"
X25519_LABEL = "CAREDATA X25519 PUBLIC KEY"
HYBRID_LABEL = "CAREDATA MLKEM768-X25519 PUBLIC KEY"
MLKEM768_PUBLIC_BYTES = 1184
_PEM_BLOCK = re.compile(r"-----BEGIN ([A-Z0-9 -]+)-----\s*(.*?)\s*-----END \1-----", re.S)


class Role(Enum):
    LINKAGE = "linkage"
    VAULT = "vault"
    PSEUDONYM = "pseudonym"
    TRANSPORT = "transport"

    @property
    def file_name(self) -> str:
        return f"{self.value}.key"


class KeyMaterialError(UsageError):
    """A key is missing, malformed or unprotected; the message says which and where."""


def key_path(settings: KeySettings, role: Role) -> Path:
    return Path(settings.directory) / role.file_name


def _env_name(settings: KeySettings, role: Role) -> str:
    return str(getattr(settings, f"{role.value}_env"))


def check_key_file(path: Path, role: Role) -> None:
    """Refuse a key file that is missing, not a 32-byte regular file, or readable by others."""
    label = f"{role.value} key"
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KeyMaterialError(f"{label}: {path} not found") from None
    except OSError as err:
        raise KeyMaterialError(f"{label}: cannot read {path} ({err.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        raise KeyMaterialError(f"{label}: {path} is not a regular file")
    if info.st_mode & 0o077:
        raise KeyMaterialError(
            f"{label}: {path} is readable by group or others "
            f"(mode {stat.S_IMODE(info.st_mode):04o}); chmod 600 it"
        )
    if info.st_size != KEY_BYTES:
        raise KeyMaterialError(
            f"{label}: {path} holds {info.st_size} bytes, expected {KEY_BYTES}"
        )


def _from_env(value: str, name: str, role: Role) -> bytes:
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyMaterialError(f"{role.value} key: ${name} is not valid base64") from None
    if len(key) != KEY_BYTES:
        raise KeyMaterialError(
            f"{role.value} key: ${name} decodes to {len(key)} bytes, expected {KEY_BYTES}"
        )
    return key


def _locate(settings: KeySettings, role: Role) -> bytes | Path:
    """The key from the role's environment variable if set, else its checked key file."""
    name = _env_name(settings, role)
    value = os.environ.get(name)
    if value:
        return _from_env(value, name, role)
    path = key_path(settings, role)
    if not path.exists():
        raise KeyMaterialError(f"{role.value} key: {path} not found and ${name} is not set")
    check_key_file(path, role)
    return path


def load_key(settings: KeySettings, role: Role) -> bytes:
    """The role's 32 key bytes, for keys used in Python (envelopes, key derivation)."""
    found = _locate(settings, role)
    return found if isinstance(found, bytes) else found.read_bytes()


@contextmanager
def key_file(settings: KeySettings, role: Role) -> Iterator[Path]:
    """A file holding the role's key, so Spark can read the key as data, never a literal.

    A key given in the environment is written to a private (0600) temporary file removed
    when the block ends: keep the block open until the Spark jobs that use the key ran.
    """
    found = _locate(settings, role)
    if isinstance(found, Path):
        yield found
        return
    fd, temp = tempfile.mkstemp(prefix=f"caredata-{role.value}-", suffix=".key")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(found)
        yield Path(temp)
    finally:
        Path(temp).unlink(missing_ok=True)


def _hkdf(seed: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(seed)


@dataclass(frozen=True)
class TransportPublicKey:
    """The public keys providers encrypt submissions to, one per envelope suite."""

    x25519: x25519.X25519PublicKey
    mlkem768: mlkem.MLKEM768PublicKey
    hybrid_x25519: x25519.X25519PublicKey

    @property
    def hybrid(self) -> MLKEM768X25519PublicKey:
        return MLKEM768X25519PublicKey(self.mlkem768, self.hybrid_x25519)

    @property
    def key_id(self) -> bytes:
        digest = hashlib.sha256(
            self.x25519.public_bytes_raw()
            + self.mlkem768.public_bytes_raw()
            + self.hybrid_x25519.public_bytes_raw()
        )
        return digest.digest()[:8]

    def to_text(self) -> str:
        def block(label: str, raw: bytes) -> str:
            body = base64.encodebytes(raw).decode("ascii")
            return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n"

        return (
            "# caredata-spark safe haven transport public key: encrypt submissions with\n"
            "#   caredata encrypt --in FILE.csv --out FILE.csv.enc --public-key THIS_FILE\n"
            f"# key id: {self.key_id.hex()}\n"
            + block(X25519_LABEL, self.x25519.public_bytes_raw())
            + block(
                HYBRID_LABEL,
                self.mlkem768.public_bytes_raw() + self.hybrid_x25519.public_bytes_raw(),
            )
        )

    @classmethod
    def from_text(cls, text: str, where: str) -> TransportPublicKey:
        blocks = {label: body for label, body in _PEM_BLOCK.findall(text)}
        try:
            classical = base64.b64decode("".join(blocks[X25519_LABEL].split()), validate=True)
            hybrid = base64.b64decode("".join(blocks[HYBRID_LABEL].split()), validate=True)
            return cls(
                x25519=x25519.X25519PublicKey.from_public_bytes(classical),
                mlkem768=mlkem.MLKEM768PublicKey.from_public_bytes(
                    hybrid[:MLKEM768_PUBLIC_BYTES]
                ),
                hybrid_x25519=x25519.X25519PublicKey.from_public_bytes(
                    hybrid[MLKEM768_PUBLIC_BYTES:]
                ),
            )
        except KeyError as missing:
            raise KeyMaterialError(f"public key {where}: no {missing.args[0]} block") from None
        except (binascii.Error, ValueError):
            raise KeyMaterialError(f"public key {where}: malformed key block") from None


@dataclass(frozen=True)
class TransportPrivateKey:
    """The safe haven's transport private keys, derived from the 32-byte transport seed."""

    x25519: x25519.X25519PrivateKey = field(repr=False)
    mlkem768: mlkem.MLKEM768PrivateKey = field(repr=False)
    hybrid_x25519: x25519.X25519PrivateKey = field(repr=False)

    @classmethod
    def from_seed(cls, seed: bytes) -> TransportPrivateKey:
        if len(seed) != KEY_BYTES:
            raise KeyMaterialError(f"transport key: seed must be {KEY_BYTES} bytes")
        return cls(
            x25519=x25519.X25519PrivateKey.from_private_bytes(
                _hkdf(seed, b"caredata transport x25519 v1", 32)
            ),
            mlkem768=mlkem.MLKEM768PrivateKey.from_seed_bytes(
                _hkdf(seed, b"caredata transport mlkem768 v1", 64)
            ),
            hybrid_x25519=x25519.X25519PrivateKey.from_private_bytes(
                _hkdf(seed, b"caredata transport hybrid x25519 v1", 32)
            ),
        )

    @property
    def hybrid(self) -> MLKEM768X25519PrivateKey:
        return MLKEM768X25519PrivateKey(self.mlkem768, self.hybrid_x25519)

    def public_key(self) -> TransportPublicKey:
        return TransportPublicKey(
            x25519=self.x25519.public_key(),
            mlkem768=self.mlkem768.public_key(),
            hybrid_x25519=self.hybrid_x25519.public_key(),
        )


def load_transport_key(settings: KeySettings) -> TransportPrivateKey:
    return TransportPrivateKey.from_seed(load_key(settings, Role.TRANSPORT))


def load_public_key(path: str | os.PathLike[str]) -> TransportPublicKey:
    try:
        text = Path(path).read_text(encoding="ascii")
    except FileNotFoundError:
        raise KeyMaterialError(f"public key {path}: not found") from None
    except (OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or "not a text file"
        raise KeyMaterialError(f"public key {path}: cannot read ({reason})") from None
    return TransportPublicKey.from_text(text, str(path))


def _write_private(path: Path, data: bytes) -> None:
    """Write via a 0600 temporary file renamed into place: no moment where others can read."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(temp, PRIVATE_MODE)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def generate_keys(directory: str | os.PathLike[str], force: bool = False) -> list[Path]:
    """Write a fresh key for every role and the transport public key; return the paths.

    Existing keys are kept unless `force`: replacing the linkage or vault key makes every
    hash and vault entry made with the old one unusable.
    """
    root = Path(directory)
    targets = [root / role.file_name for role in Role]
    existing = [str(p) for p in targets if p.exists()]
    if existing and not force:
        raise KeyMaterialError(
            f"keys already exist ({', '.join(existing)}); pass --force to replace them "
            "(data keyed with the old keys can no longer be linked or decrypted)"
        )
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    secrets = {role: os.urandom(KEY_BYTES) for role in Role}
    for role, secret in secrets.items():
        _write_private(root / role.file_name, secret)
    public = root / PUBLIC_FILE
    public.write_text(
        TransportPrivateKey.from_seed(secrets[Role.TRANSPORT]).public_key().to_text(),
        encoding="ascii",
    )
    return [*targets, public]
