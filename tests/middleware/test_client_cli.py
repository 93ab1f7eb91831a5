"""The client CLI end to end (in process) against a real retriever: keys, users, index, query, rotate."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from client_harness import HashEncoder, jpeg_bytes, picture

import middleware.encoder
from pmirs.cli import main
from retriever.testing import ServiceProcess

os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    proc = ServiceProcess(tmp_path_factory.mktemp("cli-svc") / "data")
    try:
        proc.start()
        yield proc
    finally:
        proc.stop()


@pytest.fixture
def env(service: ServiceProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Client options from the environment, as a user would set them; the encoder is the test one."""
    monkeypatch.setenv("PMIRS_SERVER", service.url)
    monkeypatch.setenv("PMIRS_KEYSTORE", str(tmp_path / "alice.keys"))
    monkeypatch.setenv("PMIRS_PASSPHRASE", "s3cret passphrase")
    monkeypatch.setattr(middleware.encoder, "create_encoder", lambda *args, **kwargs: HashEncoder())
    return tmp_path


def image_folder(root: Path, labels: dict[str, int], offset: int = 0) -> Path:
    for j, (label, n) in enumerate(labels.items()):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / label / f"{i}.jpg").write_bytes(jpeg_bytes(picture(100 * j + i + offset)))
    return root


def test_cli_flow(service: ServiceProcess, env: Path, capsys: pytest.CaptureFixture[str],
                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["keys", "init", "--user", "alice", "--export", str(env / "alice.pub.json")]) == 0
    assert service.fingerprint in capsys.readouterr().err  # pinned on first use
    assert main(["users", "add", "alice", "--public-key", str(env / "alice.pub.json"), "--tenant", "acme",
                 "--data-dir", str(service.data_dir)]) == 0

    photos = image_folder(env / "photos", {"red_fox": 3, "sea_lion": 2})
    assert main(["index", str(photos), "--collection", "pics", "--batch-size", "2"]) == 0
    assert "5 added, 0 already present" in capsys.readouterr().out
    image_folder(photos, {"red_fox": 4})  # one new photo in an existing class
    assert main(["index", str(photos), "--collection", "pics"]) == 0
    assert "1 added, 5 already present" in capsys.readouterr().out  # resumed: existing ids skipped

    query_image = photos / "sea_lion" / "1.jpg"
    assert main(["query", "--image", str(query_image), "--collection", "pics", "--k", "2", "--json",
                 "--save-images", str(env / "out")]) == 0
    result = json.loads(capsys.readouterr().out)
    top = result["items"][0]
    assert (top["caption"], top["metadata"]["label"], top["metadata"]["file"]) == (
        "a photo of a sea lion", "sea lion", "sea_lion/1.jpg")
    assert Path(top["image_path"]).read_bytes() == query_image.read_bytes()
    assert set(result["timings_ms"]) >= {"encode", "http", "decrypt"}
    assert main(["query", "a photo of a red fox", "--collection", "pics"]) == 0
    assert "timings (ms)" in capsys.readouterr().out

    assert main(["keys", "rotate", "pics"]) == 0
    assert "6 items moved from key version 1 to 2" in capsys.readouterr().out
    assert main(["query", "--image", str(query_image), "--collection", "pics", "--k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["items"][0]["id"] == top["id"]

    monkeypatch.setenv("PMIRS_PASSPHRASE", "wrong passphrase")
    assert main(["keys", "list"]) == 2
    assert "wrong passphrase" in capsys.readouterr().err


def test_cli_refuses_unreadable_images(service: ServiceProcess, env: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keys", "init", "--user", "bob", "--export", str(env / "bob.pub.json")]) == 0
    assert main(["users", "add", "bob", "--public-key", str(env / "bob.pub.json"), "--tenant", "acme",
                 "--data-dir", str(service.data_dir)]) == 0
    photos = image_folder(env / "photos", {"cat": 2})
    (photos / "cat" / "broken.jpg").write_text("not really a jpeg")
    capsys.readouterr()
    assert main(["index", str(photos), "--collection", "cats"]) == 2
    assert "unreadable" in capsys.readouterr().err
    assert main(["index", str(photos), "--collection", "cats", "--skip-invalid"]) == 0
    assert "2 added" in capsys.readouterr().out
    assert main(["query", "--collection", "cats"]) == 2  # neither text nor image
    assert main(["keys", "init", "--user", "bob"]) == 2  # keystore exists: refuse to overwrite
