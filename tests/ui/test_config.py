"""Config loading, keystore discovery, upload checks and the launch command line (no server, no browser)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from middleware.keystore import Keystore
from pmirs.cli import build_parser
from pmirs.errors import UploadRejectedError
from ui.config import list_users, load_config
from ui.launch import ui_command
from ui.turn import check_upload


def image_bytes(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(out, format=fmt)
    return out.getvalue()


def test_load_config_reads_arguments_and_passphrases() -> None:
    config = load_config(["--server", "http://127.0.0.1:8400/", "--keystore-dir", "/ks", "--k", "3"],
                         {"PMIRS_PASSPHRASE": "shared", "PMIRS_PASSPHRASE_BOB": "bobs", "OTHER": "x"})
    assert config.server_url == "http://127.0.0.1:8400"
    assert config.keystore_dir == Path("/ks") and config.k == 3
    assert config.passphrase_for("alice") == "shared"
    assert config.passphrase_for("bob") == "bobs"
    assert "shared" not in repr(config) and "bobs" not in repr(config)


def test_load_config_without_passphrase_has_none() -> None:
    config = load_config(["--server", "http://127.0.0.1:1", "--keystore-dir", "ks"], {})
    assert config.passphrase_for("alice") is None


def test_list_users_finds_only_keystores(tmp_path: Path) -> None:
    Keystore.create(tmp_path / "alice.keys", "pw", "alice", scrypt_n=2**4)
    Keystore.create(tmp_path / "bob.json", "pw", "bob", scrypt_n=2**4)
    (tmp_path / "notes.json").write_text(json.dumps({"format": "something else"}))
    (tmp_path / "broken.keys").write_text("{not json")
    assert list_users(tmp_path) == {"alice": tmp_path / "alice.keys", "bob": tmp_path / "bob.json"}
    assert list_users(tmp_path / "missing") == {}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_check_upload_accepts_jpeg_and_png(fmt: str) -> None:
    data = image_bytes(fmt)
    assert check_upload(f"x.{fmt.lower()}", data, 2**20).data == data


@pytest.mark.parametrize(("data", "message"), [
    (b"not an image at all", "not a readable image"),
    (image_bytes("GIF"), "GIF image; upload a JPEG or PNG"),
    (image_bytes("PNG") + b"\0" * 2048, "the limit is"),
])
def test_check_upload_refuses(data: bytes, message: str) -> None:
    with pytest.raises(UploadRejectedError, match=message):
        check_upload("upload", data, 2048)


def test_ui_command_binds_localhost_and_keeps_secrets_off_the_command_line() -> None:
    cmd = ui_command("http://127.0.0.1:8400", Path("/ks"), port=8600, model="smollm2-135m", n_threads=1)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--browser.gatherUsageStats") + 1] == "false"
    assert cmd[cmd.index("--server.headless") + 1] == "true"
    script_args = cmd[cmd.index("--") + 1:]
    assert script_args[:4] == ["--server", "http://127.0.0.1:8400", "--keystore-dir", "/ks"]
    assert not any("passphrase" in part.lower() for part in cmd)
    assert load_config(script_args, {}).n_threads == 1


def test_pmirs_ui_defaults_to_localhost() -> None:
    args = build_parser().parse_args(["ui", "--server", "http://127.0.0.1:8400", "--keystore-dir", "ks"])
    assert (args.host, args.port) == ("127.0.0.1", 8501)
