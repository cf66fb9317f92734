"""Keys per role: generation, loading from file or environment, and refusing bad keys."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from caredata_spark.cli import main
from caredata_spark.config import KeySettings
from caredata_spark.keys import (
    KEY_BYTES,
    PUBLIC_FILE,
    KeyMaterialError,
    Role,
    TransportPrivateKey,
    TransportPublicKey,
    generate_keys,
    key_file,
    load_key,
    load_public_key,
    load_transport_key,
)


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "keys"
    generate_keys(directory)
    return directory


@pytest.fixture
def settings(key_dir: Path, monkeypatch: pytest.MonkeyPatch) -> KeySettings:
    """Settings reading `key_dir`, with env names no real deployment variable can shadow."""
    names = {f"{role.value}_env": f"CAREDATA_TEST_{role.value.upper()}_KEY" for role in Role}
    for name in names.values():
        monkeypatch.delenv(name, raising=False)
    return KeySettings(directory=str(key_dir), **names)


def _encodings(key: bytes) -> list[str]:
    return [key.hex(), key.hex().upper(), base64.b64encode(key).decode()]


def test_generate_writes_private_32_byte_keys_and_the_public_key(key_dir: Path) -> None:
    for role in Role:
        path = key_dir / role.file_name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert len(path.read_bytes()) == KEY_BYTES
    keys = {(key_dir / role.file_name).read_bytes() for role in Role}
    assert len(keys) == len(Role)  # independent keys
    public = load_public_key(key_dir / PUBLIC_FILE)
    seed = (key_dir / Role.TRANSPORT.file_name).read_bytes()
    assert public.key_id == TransportPrivateKey.from_seed(seed).public_key().key_id
    assert stat.S_IMODE(key_dir.stat().st_mode) == 0o700


def test_generate_refuses_to_overwrite_unless_forced(key_dir: Path) -> None:
    before = (key_dir / "linkage.key").read_bytes()
    with pytest.raises(KeyMaterialError, match="already exist.*--force"):
        generate_keys(key_dir)
    assert (key_dir / "linkage.key").read_bytes() == before
    generate_keys(key_dir, force=True)
    assert (key_dir / "linkage.key").read_bytes() != before
    assert stat.S_IMODE((key_dir / "linkage.key").stat().st_mode) == 0o600


def test_load_key_from_file(settings: KeySettings, key_dir: Path) -> None:
    for role in Role:
        assert load_key(settings, role) == (key_dir / role.file_name).read_bytes()


def test_environment_wins_over_the_file(
    settings: KeySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = os.urandom(KEY_BYTES)
    monkeypatch.setenv(settings.vault_env, base64.b64encode(key).decode())
    assert load_key(settings, Role.VAULT) == key


def test_missing_key_names_role_path_and_variable(tmp_path: Path) -> None:
    settings = KeySettings(directory=str(tmp_path), linkage_env="CAREDATA_TEST_UNSET_KEY")
    with pytest.raises(KeyMaterialError) as err:
        load_key(settings, Role.LINKAGE)
    assert str(err.value) == (
        f"linkage key: {tmp_path}/linkage.key not found and $CAREDATA_TEST_UNSET_KEY is not set"
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("not base64!", "is not valid base64"),
        (base64.b64encode(os.urandom(31)).decode(), "decodes to 31 bytes, expected 32"),
    ],
    ids=["not-base64", "31-bytes"],  # stable names (xdist workers must collect the same), and no key in them
)
def test_bad_environment_key_is_refused_without_echoing_it(
    settings: KeySettings, monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    monkeypatch.setenv(settings.linkage_env, value)
    with pytest.raises(KeyMaterialError, match=reason) as err:
        load_key(settings, Role.LINKAGE)
    assert value not in str(err.value)
    assert str(err.value).startswith(f"linkage key: ${settings.linkage_env} ")


def test_key_file_readable_by_others_is_refused(settings: KeySettings, key_dir: Path) -> None:
    path = key_dir / "pseudonym.key"
    path.chmod(0o644)
    with pytest.raises(KeyMaterialError, match=r"readable by group or others \(mode 0644\)"):
        load_key(settings, Role.PSEUDONYM)


def test_key_file_of_wrong_length_is_refused_without_echoing_it(
    settings: KeySettings, key_dir: Path
) -> None:
    path = key_dir / "linkage.key"
    content = os.urandom(KEY_BYTES + 1)
    path.write_bytes(content)
    with pytest.raises(KeyMaterialError, match="holds 33 bytes, expected 32") as err:
        load_key(settings, Role.LINKAGE)
    assert not any(e in str(err.value) for e in _encodings(content))


def test_key_file_is_the_file_itself_when_no_environment(
    settings: KeySettings, key_dir: Path
) -> None:
    with key_file(settings, Role.LINKAGE) as path:
        assert path == key_dir / "linkage.key"
    assert path.exists()  # the real key file is never removed


def test_key_file_from_environment_is_private_and_removed(
    settings: KeySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = os.urandom(KEY_BYTES)
    monkeypatch.setenv(settings.linkage_env, base64.b64encode(key).decode())
    with key_file(settings, Role.LINKAGE) as path:
        assert path.read_bytes() == key
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not path.exists()


def test_key_file_from_environment_is_removed_on_error(
    settings: KeySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(settings.linkage_env, base64.b64encode(os.urandom(KEY_BYTES)).decode())
    with pytest.raises(RuntimeError), key_file(settings, Role.LINKAGE) as path:
        raise RuntimeError("job failed")
    assert not path.exists()


def test_transport_keys_derive_deterministically_from_the_seed() -> None:
    seed = os.urandom(KEY_BYTES)
    one, two = TransportPrivateKey.from_seed(seed), TransportPrivateKey.from_seed(seed)
    assert one.public_key().to_text() == two.public_key().to_text()
    other = TransportPrivateKey.from_seed(os.urandom(KEY_BYTES))
    assert other.public_key().key_id != one.public_key().key_id
    assert repr(one) == "TransportPrivateKey()"  # private parts stay out of logs


def test_public_key_text_round_trips() -> None:
    public = TransportPrivateKey.from_seed(os.urandom(KEY_BYTES)).public_key()
    text = public.to_text()
    assert f"# key id: {public.key_id.hex()}" in text
    parsed = TransportPublicKey.from_text(text, "test")
    assert parsed.to_text() == text


def test_public_key_missing_block_is_refused(tmp_path: Path) -> None:
    text = TransportPrivateKey.from_seed(os.urandom(KEY_BYTES)).public_key().to_text()
    path = tmp_path / "transport.pub"
    path.write_text(text.split("-----BEGIN CAREDATA MLKEM768")[0])
    with pytest.raises(KeyMaterialError, match="no CAREDATA MLKEM768-X25519 PUBLIC KEY block"):
        load_public_key(path)


def test_cli_generate_and_public(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CAREDATA_TRANSPORT_KEY", raising=False)
    directory = tmp_path / "k"
    assert main(["keys", "generate", "--dir", str(directory)]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(directory / role.file_name) for role in Role] + [
        str(directory / PUBLIC_FILE)
    ]
    assert main(["keys", "generate", "--dir", str(directory)]) == 2
    assert "pass --force" in capsys.readouterr().err

    assert main(["keys", "public", "--dir", str(directory)]) == 0
    public = capsys.readouterr().out
    assert public == (directory / PUBLIC_FILE).read_text()
    seed = (directory / "transport.key").read_bytes()
    assert not any(e in public for e in _encodings(seed))

    out = tmp_path / "haven.pub"
    assert main(["keys", "public", "--dir", str(directory), "--out", str(out)]) == 0
    assert out.read_text() == public


def test_load_transport_key_from_environment(
    settings: KeySettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = os.urandom(KEY_BYTES)
    monkeypatch.setenv(settings.transport_env, base64.b64encode(seed).decode())
    expected = TransportPrivateKey.from_seed(seed).public_key().key_id
    assert load_transport_key(settings).public_key().key_id == expected
