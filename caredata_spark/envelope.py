"""The encrypted-submission envelope (`<file>.csv.enc`): HPKE-wrapped key, chunked AES-GCM.

A provider encrypts a submission to the safe haven's transport public key
(`caredata encrypt`); only the safe haven's transport private key opens it. HPKE (RFC 9180,
base mode) wraps a random per-file 32-byte data key; the body is AES-256-GCM over
fixed-size chunks with the STREAM construction (as in age), so a multi-GB file is
encrypted and decrypted in constant memory, and any reordered, dropped, duplicated or
truncated chunk, or any changed header byte, is detected.

Format, version 1 (integers big-endian):

    offset  size  field
    0       8     magic, ASCII "CAREDENV"
    8       1     format version, 0x01
    9       1     suite: 0x01 DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM
                         0x02 ML-KEM-768+X25519 hybrid KEM (X-Wing), HKDF-SHA256, AES-256-GCM
    10      4     chunk size C: plaintext bytes per chunk, 1 .. 64 MiB (default 1 MiB)
    14      8     recipient key id (`keys.TransportPublicKey.key_id`)
    22      2     W, length of the wrapped key: 80 for suite 1, 1168 for suite 2
    24      W     wrapped key: HPKE single-shot output `enc || AES-256-GCM(data key)` to the
                  suite's recipient key, with HPKE info = bytes 0..23 (the fixed header)
    24+W    ...   chunks: chunk i is AES-256-GCM(data key, nonce_i, aad = bytes 0..24+W-1)
                  of plaintext bytes [i*C, (i+1)*C), i.e. C+16 bytes (ciphertext || tag);
                  the last chunk holds 0..C plaintext bytes and is the only shorter one
    nonce_i = i as 11 bytes || 0x01 for the last chunk, 0x00 for every other

An empty file is one empty last chunk (16 bytes). A file that is a multiple of C ends with
a full chunk flagged last. The index in the nonce detects reordering, dropping and
duplication; the last flag detects truncation at a chunk boundary; the header is both HPKE
info and every chunk's AAD. The data key is fresh per file, so nonces never repeat.

Decrypted chunks are authentic one by one, but the file is complete only when the last
chunk authenticated: `decrypt_stream` raises before its end otherwise, and
`decrypted_file` hands out a plaintext path only after the whole file authenticated.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import BinaryIO, NamedTuple

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from caredata_spark.errors import InputRefused
from caredata_spark.keys import TransportPrivateKey, TransportPublicKey

MAGIC = b"CAREDENV"
VERSION = 1
FIXED_HEADER = struct.Struct(">8sBBI8sH")  # magic, version, suite, chunk size, key id, W
TAG_BYTES = 16
DATA_KEY_BYTES = 32
DEFAULT_CHUNK_SIZE = 1 << 20
MAX_CHUNK_SIZE = 64 << 20
ENVELOPE_SUFFIX = ".enc"


class Suite(IntEnum):
    X25519 = 1
    MLKEM768_X25519 = 2

    @property
    def kem(self) -> hpke.KEM:
        return hpke.KEM.X25519 if self is Suite.X25519 else hpke.KEM.MLKEM768_X25519

    @property
    def hpke(self) -> hpke.Suite:
        return hpke.Suite(self.kem, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)

    @property
    def wrapped_bytes(self) -> int:
        """HPKE encapsulated key, then the sealed data key and its tag."""
        return self.kem.enc_length() + DATA_KEY_BYTES + TAG_BYTES


SUITE_NAMES = {"x25519": Suite.X25519, "mlkem768-x25519": Suite.MLKEM768_X25519}


class EnvelopeError(InputRefused):
    """An envelope was refused; names the file and the reason, never key or plaintext bytes."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"encrypted submission {name}: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class _Header:
    suite: Suite
    chunk_size: int
    key_id: bytes
    fixed: bytes  # the 24 fixed bytes: HPKE info
    wrapped: bytes

    @property
    def aad(self) -> bytes:
        return self.fixed + self.wrapped


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _read_full(source: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes, short only at end of file (pipes may return less per read)."""
    parts = []
    while size:
        part = source.read(size)
        if not part:
            break
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _blocks(source: BinaryIO, size: int) -> Iterator[tuple[int, bytes, bool]]:
    """(index, block, whether it is the file's last) of `size`-byte blocks, one read ahead.

    The last block may be short or empty (an empty file is one empty block); a file that is
    a multiple of `size` ends with a full block flagged last.
    """
    index, current = 0, _read_full(source, size)
    while True:
        following = _read_full(source, size) if len(current) == size else b""
        yield index, current, not following
        if not following:
            return
        index, current = index + 1, following


def encrypt_stream(
    source: BinaryIO,
    sink: BinaryIO,
    recipient: TransportPublicKey,
    suite: Suite = Suite.MLKEM768_X25519,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> None:
    """Write the envelope of `source` to `sink`, holding at most three chunks in memory."""
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk size must be 1 .. {MAX_CHUNK_SIZE} bytes, got {chunk_size}")
    fixed = FIXED_HEADER.pack(
        MAGIC, VERSION, suite, chunk_size, recipient.key_id, suite.wrapped_bytes
    )
    data_key = AESGCM.generate_key(bit_length=256)
    public = recipient.x25519 if suite is Suite.X25519 else recipient.hybrid
    wrapped = suite.hpke.encrypt(data_key, public, info=fixed)
    aad = fixed + wrapped
    aead = AESGCM(data_key)
    sink.write(aad)
    for index, chunk, last in _blocks(source, chunk_size):
        sink.write(aead.encrypt(_nonce(index, last), chunk, aad))


def encrypt_file(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    recipient: TransportPublicKey,
    suite: Suite = Suite.MLKEM768_X25519,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> None:
    """Encrypt `src` to `dst` via `<dst>.part`, so a landing zone never sees half a file."""
    target = Path(dst)
    partial = target.with_name(target.name + ".part")
    try:
        with open(src, "rb") as source, open(partial, "wb") as sink:
            encrypt_stream(source, sink, recipient, suite, chunk_size)
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


def _read_header(source: BinaryIO, name: str) -> _Header:
    fixed = _read_full(source, FIXED_HEADER.size)
    if len(fixed) < FIXED_HEADER.size or not fixed.startswith(MAGIC):
        raise EnvelopeError(name, "not an envelope")
    _, version, suite_id, chunk_size, key_id, wrapped_len = FIXED_HEADER.unpack(fixed)
    if version != VERSION:
        raise EnvelopeError(name, f"unsupported envelope version {version}")
    try:
        suite = Suite(suite_id)
    except ValueError:
        raise EnvelopeError(name, f"unknown suite {suite_id}") from None
    if not 1 <= chunk_size <= MAX_CHUNK_SIZE or wrapped_len != suite.wrapped_bytes:
        raise EnvelopeError(name, "corrupt header")
    wrapped = _read_full(source, wrapped_len)
    if len(wrapped) < wrapped_len:
        raise EnvelopeError(name, "truncated header")
    return _Header(suite, chunk_size, key_id, fixed, wrapped)


def _data_key(header: _Header, keys: Iterable[TransportPrivateKey], name: str) -> bytes:
    candidates = {key.public_key().key_id: key for key in keys}
    key = candidates.get(header.key_id)
    if key is None:
        have = ", ".join(k.hex() for k in candidates) or "none"
        raise EnvelopeError(
            name, f"wrong key: encrypted to key id {header.key_id.hex()}, have {have}"
        )
    private = key.x25519 if header.suite is Suite.X25519 else key.hybrid
    try:
        return header.suite.hpke.decrypt(header.wrapped, private, info=header.fixed)
    except InvalidTag:
        raise EnvelopeError(name, "tampered header") from None


def _open_chunk(
    aead: AESGCM, aad: bytes, index: int, sealed: bytes, last: bool, name: str
) -> bytes:
    try:
        return aead.decrypt(_nonce(index, last), sealed, aad)
    except InvalidTag:
        pass
    # Say why: a chunk that opens with the other last-flag was moved to or from the end.
    try:
        aead.decrypt(_nonce(index, not last), sealed, aad)
    except InvalidTag:
        raise EnvelopeError(name, f"tampered chunk {index}") from None
    if last:
        raise EnvelopeError(name, "truncated: missing final chunk")
    raise EnvelopeError(name, f"data after the final chunk {index}")


def _source_name(source: str | os.PathLike[str] | BinaryIO) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    return str(getattr(source, "name", "<stream>"))


def decrypt_stream(
    source: str | os.PathLike[str] | BinaryIO,
    keys: TransportPrivateKey | Iterable[TransportPrivateKey],
) -> Iterator[bytes]:
    """Plaintext chunks of an envelope, each authenticated before it is yielded.

    `keys` may hold several transport keys (during a key rotation); the header's key id
    picks one. Raises `EnvelopeError` on the first problem, so a consumer must treat what
    it received as unusable unless the iteration ran to its end.
    """
    name = _source_name(source)
    candidates = [keys] if isinstance(keys, TransportPrivateKey) else list(keys)
    if not isinstance(source, (str, os.PathLike)):
        yield from _decrypt(source, candidates, name)
        return
    try:
        stream = open(source, "rb")
    except OSError as err:
        raise EnvelopeError(name, f"cannot read ({err.strerror})") from None
    with stream:
        yield from _decrypt(stream, candidates, name)


def _decrypt(
    source: BinaryIO, keys: list[TransportPrivateKey], name: str
) -> Iterator[bytes]:
    header = _read_header(source, name)
    aead = AESGCM(_data_key(header, keys, name))
    for index, sealed, last in _blocks(source, header.chunk_size + TAG_BYTES):
        if len(sealed) < TAG_BYTES:
            raise EnvelopeError(name, "truncated: missing final chunk")
        yield _open_chunk(aead, header.aad, index, sealed, last, name)


class Decrypted(NamedTuple):
    """A fully authenticated plaintext copy; `sha256` identifies the submission's content."""

    path: Path
    sha256: str
    size: int


@contextmanager
def decrypted_file(
    source: str | os.PathLike[str],
    keys: TransportPrivateKey | Iterable[TransportPrivateKey],
    scratch_dir: str | os.PathLike[str] | None = None,
    suffix: str = "",
) -> Iterator[Decrypted]:
    """Decrypt to a private (0600) scratch file, yielded only once the whole file authenticated.

    The scratch file is removed when the block ends, on success or error. `suffix` (e.g.
    ".csv") lets readers that choose a format by extension read it.
    """
    fd, temp = tempfile.mkstemp(prefix="caredata-", suffix=suffix, dir=scratch_dir)
    path = Path(temp)
    try:
        digest = hashlib.sha256()
        size = 0
        with os.fdopen(fd, "wb") as out:
            for chunk in decrypt_stream(source, keys):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        yield Decrypted(path, digest.hexdigest(), size)
    finally:
        path.unlink(missing_ok=True)
