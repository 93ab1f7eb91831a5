"""`federated simulate` and `bench federated` read the clients' local training from one set of flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from federated.task import FederatedSettings
from pmirs.cli import build_parser, main
from pmirs.commands.federated import training_settings

FLAGS = ["--local-epochs", "2", "--local-steps", "7", "--learning-rate", "0.003", "--anchor", "0.01",
         "--loss", "class-ce", "--tower-head", "--tower-blocks", "2", "--tower-lr-scale", "0.5", "--mirror",
         "--train-text", "--tower-classifier", "--distill", "0.5", "--lr-schedule", "cosine", "--batch-size", "64",
         "--heads", "base.pt"]


def test_both_commands_turn_the_same_flags_into_the_same_run_config() -> None:
    simulate = build_parser(["federated"]).parse_args(["federated", "simulate", *FLAGS])
    bench = build_parser(["bench"]).parse_args(["bench", "federated", *FLAGS])
    expected = {"local-epochs": 2, "local-steps": 7, "learning-rate": 0.003, "anchor": 0.01, "loss": "class-ce",
                "tower-head": True, "tower-blocks": 2, "tower-lr-scale": 0.5, "mirror": True, "train-text": True,
                "tower-classifier": True, "distill": 0.5, "lr-schedule": "cosine", "batch-size": 64,
                "heads-path": "base.pt"}
    assert training_settings(simulate) == training_settings(bench) == expected
    settings = FederatedSettings.from_config(expected)  # every entry is a run-config key Flower passes on
    assert (settings.tower_blocks, settings.loss, settings.heads_path) == (2, "class-ce", "base.pt")
    assert (settings.tower_classifier, settings.distill) == (True, 0.5)


@pytest.mark.parametrize(("flags", "message"), [
    (["--tower-blocks", "1"], "add --tower-head"),
    (["--mirror"], "--mirror flips the input maps"),
    (["--tower-classifier"], "--tower-classifier reads the tuned tower layers' output: add --tower-head"),
    (["--tower-head", "--distill", "0.5"], "> 0 only with --tower-classifier"),
    (["--tower-head", "--tower-classifier", "--distill", "-1"], "--distill must be >= 0"),
])
def test_the_benchmark_refuses_tower_flags_without_the_tower_head_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture, flags: list[str], message: str) -> None:
    out = tmp_path / "fed.json"
    assert main(["bench", "federated", "--data", str(tmp_path), "--out", str(out),
                 "--work-dir", str(tmp_path / "runs"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / "runs").exists()


def test_the_benchmark_refuses_an_unknown_run_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "fed.json"
    assert main(["bench", "federated", "--data", str(tmp_path), "--out", str(out),
                 "--work-dir", str(tmp_path / "runs"), "--runs", "fedavg-iid,fedavg-nonid"]) == 2
    err = capsys.readouterr().err
    assert "unknown runs ['fedavg-nonid']" in err and "fedavg-noniid" in err
    assert not out.exists() and not (tmp_path / "runs").exists()
