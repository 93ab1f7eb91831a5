"""`pmirs federated ship`: a run's calibrated checkpoint lands under its hash with a manifest that describes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from federated import task
from federated.shipping import ship_checkpoint
from middleware.encoder.heads import heads_version, load_heads, save_heads, save_reconfigured
from pmirs.cli import main
from pmirs.errors import FederatedError


@pytest.fixture
def run_checkpoint(tmp_path: Path, base_heads: Path) -> Path:
    """A federated run's own checkpoint and manifest, as the ServerApp saves them."""
    base = task.load_base(base_heads)
    heads = base.build()
    with torch.no_grad():
        heads.image_residual.weight.add_(0.01)  # trained: not the base's weights
    manifest = {"rounds": 3, "clients": 6, "partition": "iid", "tuned_photos": "small"}
    return task.save_checkpoint(tmp_path / "run", heads, base, manifest)


@pytest.fixture
def calibrated(tmp_path: Path, run_checkpoint: Path) -> Path:
    """The run's checkpoint after two calibrations: a mixed-kinds offset, then relevance thresholds."""
    trained = load_heads(run_checkpoint)
    offset = tmp_path / "offset.pt"
    save_reconfigured(trained, offset, tuned_offset=1.1)
    final = tmp_path / "final.pt"
    with_offset = load_heads(offset)
    save_reconfigured(with_offset, final, extra={**with_offset.config.extra, "relevance": {"image": 0.8, "text": 0.7}})
    return final


def test_shipping_copies_the_calibrated_file_under_its_hash_with_a_manifest(
        tmp_path: Path, run_checkpoint: Path, calibrated: Path) -> None:
    result = tmp_path / "mixed_kinds.json"
    result.write_text(json.dumps({"chosen_on": "held-out thumbnails", "sweep": {}}))
    dest = ship_checkpoint(calibrated, run_checkpoint, "pmirs bench federated ...", [result],
                           weights_dir=tmp_path / "weights")
    assert dest.name == f"fed-heads-{heads_version(dest)}.pt" and dest.read_bytes() == calibrated.read_bytes()
    assert not list(dest.parent.glob("*.staging"))
    manifest = json.loads(dest.with_suffix(".json").read_text())
    assert (manifest["checkpoint"], manifest["version"]) == (dest.name, heads_version(dest))
    assert manifest["trained_version"] == heads_version(run_checkpoint)
    assert (manifest["rounds"], manifest["partition"]) == (3, "iid")  # the run's manifest rides along
    assert (manifest["tuned_offset"], manifest["relevance"]) == (1.1, {"image": 0.8, "text": 0.7})
    assert manifest["trained_on"].startswith("federated fine-tuning from the zero-shot base")
    assert manifest["calibrations"] == [{"file": "mixed_kinds.json", "chosen_on": "held-out thumbnails"}]
    assert load_heads(dest).config.tuned_offset == 1.1


def test_shipping_refuses_a_file_with_other_weights_than_the_run(
        tmp_path: Path, run_checkpoint: Path, calibrated: Path) -> None:
    other = load_heads(calibrated).build()
    with torch.no_grad():
        other.image_residual.weight.add_(1e-3)
    retrained = tmp_path / "retrained.pt"
    save_heads(retrained, other, load_heads(calibrated).class_bank)
    with pytest.raises(FederatedError, match="other weights than the run's checkpoint"):
        ship_checkpoint(retrained, run_checkpoint, "cmd", weights_dir=tmp_path / "weights")
    assert not (tmp_path / "weights").exists()


def test_the_cli_ships_and_says_how_to_make_it_the_default(
        tmp_path: Path, run_checkpoint: Path, calibrated: Path, capsys: pytest.CaptureFixture) -> None:
    weights = tmp_path / "weights"
    assert main(["federated", "ship", str(calibrated), "--run", str(run_checkpoint), "--command", "cmd",
                 "--trained-on", "phrase-imagenet train/", "--weights-dir", str(weights)]) == 0
    shipped = next(weights.glob("fed-heads-*.pt"))
    assert json.loads(shipped.with_suffix(".json").read_text())["trained_on"] == "phrase-imagenet train/"
    assert "FEDERATED_HEADS_PATH" in capsys.readouterr().out
    run_checkpoint.with_suffix(".json").unlink()
    assert main(["federated", "ship", str(calibrated), "--run", str(run_checkpoint), "--command", "cmd",
                 "--weights-dir", str(weights)]) == 2
    assert "no run manifest beside" in capsys.readouterr().err


@pytest.mark.parametrize(("broken", "message"), [("calibration", "cannot read calibration result"),
                                                  ("run manifest", "cannot read run manifest")])
def test_an_unreadable_input_is_refused_before_anything_is_written(
        tmp_path: Path, run_checkpoint: Path, calibrated: Path, broken: str, message: str) -> None:
    result = tmp_path / "relevance.json"
    result.write_text("{not json")
    if broken == "run manifest":
        result.write_text("{}")
        run_checkpoint.with_suffix(".json").write_text("[1, 2]")
    with pytest.raises(FederatedError, match=message):
        ship_checkpoint(calibrated, run_checkpoint, "cmd", [result], weights_dir=tmp_path / "weights")
    assert not (tmp_path / "weights").exists()
