"""The encrypted-submission envelope: round trips, and every kind of damage refused."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from caredata_spark.cli import main
from caredata_spark.envelope import (
    FIXED_HEADER,
    TAG_BYTES,
    EnvelopeError,
    Suite,
    decrypt_stream,
    decrypted_file,
    encrypt_file,
    encrypt_stream,
)
from caredata_spark.errors import InputRefused
from caredata_spark.keys import KEY_BYTES, TransportPrivateKey, generate_keys

CHUNK = 64  # small chunks, so a few hundred bytes make many chunks


@pytest.fixture(scope="module")
def private_key() -> TransportPrivateKey:
    return TransportPrivateKey.from_seed(os.urandom(KEY_BYTES))


def seal(
    plaintext: bytes,
    key: TransportPrivateKey,
    suite: Suite = Suite.MLKEM768_X25519,
    chunk_size: int = CHUNK,
) -> bytes:
    sink = io.BytesIO()
    encrypt_stream(io.BytesIO(plaintext), sink, key.public_key(), suite, chunk_size)
    return sink.getvalue()


def header_size(suite: Suite) -> int:
    return FIXED_HEADER.size + suite.wrapped_bytes


def open_bytes(envelope: bytes, key: TransportPrivateKey) -> bytes:
    return b"".join(decrypt_stream(io.BytesIO(envelope), key))


def refusal(envelope: bytes, key: TransportPrivateKey) -> EnvelopeError:
    with pytest.raises(EnvelopeError) as err:
        open_bytes(envelope, key)
    return err.value


def chunks_of(envelope: bytes, suite: Suite = Suite.MLKEM768_X25519) -> tuple[bytes, list[bytes]]:
    """The header and the sealed chunks, for tests that damage the body."""
    head = header_size(suite)
    body = envelope[head:]
    size = CHUNK + TAG_BYTES
    return envelope[:head], [body[i : i + size] for i in range(0, len(body), size)]


@pytest.mark.parametrize("suite", list(Suite))
def test_file_round_trip(
    tmp_path: Path, private_key: TransportPrivateKey, suite: Suite
) -> None:
    plaintext = os.urandom(3 * CHUNK + 5)
    src, dst = tmp_path / "a.csv", tmp_path / "a.csv.enc"
    src.write_bytes(plaintext)
    encrypt_file(src, dst, private_key.public_key(), suite, CHUNK)
    envelope = dst.read_bytes()
    assert envelope[9] == suite
    assert len(envelope) == header_size(suite) + len(plaintext) + 4 * TAG_BYTES
    assert not (tmp_path / "a.csv.enc.part").exists()
    chunks = list(decrypt_stream(dst, private_key))
    assert [len(c) for c in chunks] == [CHUNK, CHUNK, CHUNK, 5]
    assert b"".join(chunks) == plaintext


def test_same_plaintext_encrypts_differently(private_key: TransportPrivateKey) -> None:
    assert seal(b"same", private_key) != seal(b"same", private_key)


@pytest.mark.parametrize(("size", "chunks"), [(0, 1), (CHUNK, 1), (3 * CHUNK, 3)])
def test_empty_and_exact_multiple_sizes(
    private_key: TransportPrivateKey, size: int, chunks: int
) -> None:
    plaintext = os.urandom(size)
    envelope = seal(plaintext, private_key)
    assert len(envelope) == header_size(Suite.MLKEM768_X25519) + size + chunks * TAG_BYTES
    assert open_bytes(envelope, private_key) == plaintext


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    plaintext=st.binary(max_size=700),
    chunk_size=st.integers(min_value=1, max_value=300),
    suite=st.sampled_from(list(Suite)),
)
def test_round_trip_any_size(
    private_key: TransportPrivateKey, plaintext: bytes, chunk_size: int, suite: Suite
) -> None:
    envelope = seal(plaintext, private_key, suite, chunk_size)
    assert open_bytes(envelope, private_key) == plaintext


def test_wrong_key_is_named(private_key: TransportPrivateKey) -> None:
    other = TransportPrivateKey.from_seed(os.urandom(KEY_BYTES))
    err = refusal(seal(b"NHS_NUMBER\n9434765919\n", private_key), other)
    assert isinstance(err, InputRefused)
    assert err.reason == (
        f"wrong key: encrypted to key id {private_key.public_key().key_id.hex()}, "
        f"have {other.public_key().key_id.hex()}"
    )


def test_any_of_several_keys_opens_it(private_key: TransportPrivateKey) -> None:
    """During a key rotation the old and the new transport key are both offered."""
    other = TransportPrivateKey.from_seed(os.urandom(KEY_BYTES))
    envelope = seal(b"rotated", private_key)
    assert b"".join(decrypt_stream(io.BytesIO(envelope), [other, private_key])) == b"rotated"


@pytest.mark.parametrize("suite", list(Suite))
def test_every_header_byte_is_authenticated(
    private_key: TransportPrivateKey, suite: Suite
) -> None:
    envelope = seal(os.urandom(2 * CHUNK), private_key, suite)
    for offset in range(header_size(suite)):
        damaged = bytearray(envelope)
        damaged[offset] ^= 0x01
        with pytest.raises(EnvelopeError):
            open_bytes(bytes(damaged), private_key)


@pytest.mark.parametrize(
    ("offset", "reason"),
    [
        (0, "not an envelope"),
        (8, "unsupported envelope version 0"),
        (9, "unknown suite 3"),
        (12, "tampered header"),  # chunk size: still in range, so only HPKE notices
        (14, "wrong key: encrypted to key id"),
        (30, "tampered header"),  # inside the wrapped key
    ],
)
def test_header_damage_is_explained(
    private_key: TransportPrivateKey, offset: int, reason: str
) -> None:
    damaged = bytearray(seal(os.urandom(2 * CHUNK), private_key))
    damaged[offset] ^= 0x01
    assert refusal(bytes(damaged), private_key).reason.startswith(reason)


@pytest.mark.parametrize("where", ["ciphertext", "tag"])
def test_flipped_body_byte_names_the_chunk(private_key: TransportPrivateKey, where: str) -> None:
    header, chunks = chunks_of(seal(os.urandom(5 * CHUNK), private_key))
    damaged = bytearray(chunks[3])
    damaged[5 if where == "ciphertext" else -1] ^= 0x80
    chunks[3] = bytes(damaged)
    assert refusal(header + b"".join(chunks), private_key).reason == "tampered chunk 3"


def test_reordered_chunks_are_refused(private_key: TransportPrivateKey) -> None:
    header, chunks = chunks_of(seal(os.urandom(5 * CHUNK), private_key))
    chunks[1], chunks[2] = chunks[2], chunks[1]
    assert refusal(header + b"".join(chunks), private_key).reason == "tampered chunk 1"


def test_dropped_chunk_is_refused(private_key: TransportPrivateKey) -> None:
    header, chunks = chunks_of(seal(os.urandom(5 * CHUNK), private_key))
    del chunks[2]
    assert refusal(header + b"".join(chunks), private_key).reason == "tampered chunk 2"


def test_duplicated_chunk_is_refused(private_key: TransportPrivateKey) -> None:
    header, chunks = chunks_of(seal(os.urandom(5 * CHUNK), private_key))
    chunks.insert(2, chunks[1])
    assert refusal(header + b"".join(chunks), private_key).reason == "tampered chunk 2"


def test_truncated_at_a_chunk_boundary_is_refused(private_key: TransportPrivateKey) -> None:
    header, chunks = chunks_of(seal(os.urandom(5 * CHUNK), private_key))
    envelope = header + b"".join(chunks[:3])
    assert refusal(envelope, private_key).reason == "truncated: missing final chunk"


def test_truncated_inside_a_chunk_is_refused(private_key: TransportPrivateKey) -> None:
    envelope = seal(os.urandom(5 * CHUNK), private_key)
    assert refusal(envelope[:-7], private_key).reason == "tampered chunk 4"
    header, _ = chunks_of(envelope)
    tail = envelope[: len(header) + 2 * (CHUNK + TAG_BYTES) + 3]  # 3 bytes: less than a tag
    assert refusal(tail, private_key).reason == "truncated: missing final chunk"


def test_header_only_is_refused(private_key: TransportPrivateKey) -> None:
    header, _ = chunks_of(seal(b"x", private_key))
    assert refusal(header, private_key).reason == "truncated: missing final chunk"
    assert refusal(header[:-10], private_key).reason == "truncated header"


def test_data_after_the_final_chunk_is_refused(private_key: TransportPrivateKey) -> None:
    header, chunks = chunks_of(seal(os.urandom(2 * CHUNK), private_key))
    envelope = header + b"".join(chunks) + chunks[0]
    assert refusal(envelope, private_key).reason == "data after the final chunk 1"


def test_missing_file_is_refused(tmp_path: Path, private_key: TransportPrivateKey) -> None:
    with pytest.raises(EnvelopeError, match="x.csv.enc: cannot read"):
        list(decrypt_stream(tmp_path / "x.csv.enc", private_key))


@pytest.mark.parametrize("content", [b"", b"NHS_NUMBER,DOB\n", b"CAREDEN"])
def test_not_an_envelope(private_key: TransportPrivateKey, content: bytes) -> None:
    assert refusal(content, private_key).reason == "not an envelope"


def test_message_names_the_file_and_no_secret(
    tmp_path: Path, private_key: TransportPrivateKey
) -> None:
    plaintext = b"NHS_NUMBER,DOB\n9434765919,1970-01-01\n" * 4
    path = tmp_path / "gp_patients.csv.enc"
    header, chunks = chunks_of(seal(plaintext, private_key))
    chunks[1] = chunks[1][:-1] + bytes([chunks[1][-1] ^ 1])
    path.write_bytes(header + b"".join(chunks))
    with pytest.raises(EnvelopeError) as err:
        list(decrypt_stream(path, private_key))
    message = str(err.value)
    assert message == f"encrypted submission {path}: tampered chunk 1"
    assert "9434765919" not in message


def test_decrypt_streams_without_reading_ahead(private_key: TransportPrivateKey) -> None:
    """Constant memory: a chunk is yielded before the rest of the file has been read."""

    class CountingReader(io.BytesIO):
        consumed = 0

        def read(self, size: int | None = -1) -> bytes:
            data = super().read(size)
            self.consumed += len(data)
            return data

    envelope = seal(os.urandom(50 * CHUNK), private_key)
    source = CountingReader(envelope)
    first = next(decrypt_stream(source, private_key))
    assert len(first) == CHUNK
    assert source.consumed <= header_size(Suite.MLKEM768_X25519) + 2 * (CHUNK + TAG_BYTES)


def _scratch_files(directory: Path) -> list[Path]:
    return sorted(directory.iterdir())


def test_decrypted_file_is_private_and_removed(
    tmp_path: Path, private_key: TransportPrivateKey
) -> None:
    plaintext = os.urandom(4 * CHUNK + 1)
    envelope, scratch = tmp_path / "s.csv.enc", tmp_path / "scratch"
    scratch.mkdir()
    envelope.write_bytes(seal(plaintext, private_key))
    with decrypted_file(envelope, private_key, scratch, suffix=".csv") as plain:
        assert plain.path.read_bytes() == plaintext
        assert plain.path.suffix == ".csv"
        assert plain.size == len(plaintext)
        assert plain.sha256 == hashlib.sha256(plaintext).hexdigest()
        assert stat.S_IMODE(plain.path.stat().st_mode) == 0o600
    assert _scratch_files(scratch) == []


def test_decrypted_file_yields_nothing_unauthenticated(
    tmp_path: Path, private_key: TransportPrivateKey
) -> None:
    """A file truncated after good chunks never reaches the reader, and no scratch remains."""
    envelope, scratch = tmp_path / "s.csv.enc", tmp_path / "scratch"
    scratch.mkdir()
    header, chunks = chunks_of(seal(os.urandom(4 * CHUNK), private_key))
    envelope.write_bytes(header + b"".join(chunks[:2]))
    entered = False
    with pytest.raises(EnvelopeError, match="missing final chunk"):
        with decrypted_file(envelope, private_key, scratch):
            entered = True
    assert not entered
    assert _scratch_files(scratch) == []


def test_cli_encrypt(tmp_path: Path) -> None:
    generate_keys(tmp_path / "keys")
    seed = (tmp_path / "keys" / "transport.key").read_bytes()
    key = TransportPrivateKey.from_seed(seed)
    src = tmp_path / "A81001.csv"
    src.write_bytes(os.urandom(3000))
    public = str(tmp_path / "keys" / "transport.pub")
    assert main(["encrypt", "--in", str(src), "--public-key", public]) == 0
    out = tmp_path / "A81001.csv.enc"
    assert out.read_bytes()[9] == Suite.MLKEM768_X25519
    assert b"".join(decrypt_stream(out, key)) == src.read_bytes()
    classical = tmp_path / "classical.enc"
    args = ["--in", str(src), "--out", str(classical), "--public-key", public]
    assert main(["encrypt", *args, "--suite", "x25519", "--chunk-size", "100"]) == 0
    assert classical.read_bytes()[9] == Suite.X25519
    assert b"".join(decrypt_stream(classical, key)) == src.read_bytes()
    assert main(["encrypt", "--in", str(tmp_path / "missing.csv"), "--public-key", public]) == 2
