"""`pmirs bench federated-compare`: runs from several result files, gaps to the first, one plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pmirs.cli import main


def results_file(path: Path, run: str, mean_f1_per_round: list[tuple[float, float]]) -> Path:
    """A `bench federated` result file holding the base and one run (only what the comparison reads)."""
    history = [{"mean_f1": {"5": f5, "10": f10}, "heldout_f1@10": 0.8 + f10 / 10} for f5, f10 in mean_f1_per_round]
    path.write_text(json.dumps({"runs": {"base": {"history": history[:1]}, run: {"history": history}}}))
    return path


def test_the_comparison_puts_runs_of_different_lengths_side_by_side(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    iid = results_file(tmp_path / "iid.json", "fedavg-iid", [(0.75, 0.69), (0.92, 0.87), (0.93, 0.885)])
    noniid = results_file(tmp_path / "noniid.json", "fedavg-noniid",
                          [(0.75, 0.69), (0.89, 0.83), (0.90, 0.85), (0.91, 0.86), (0.92, 0.872)])
    out = tmp_path / "plots" / "compare.png"
    assert main(["bench", "federated-compare", f"IID={iid}:fedavg-iid", f"non-IID 4x={noniid}:fedavg-noniid",
                 "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    table = out.with_suffix(".md").read_text()
    assert "| non-IID 4x | `noniid.json:fedavg-noniid` | 4 | 0.920 | 0.872 | 1.00 / 1.30 | 0.887 |" in table
    assert "| IID | `iid.json:fedavg-iid` | 2 | 0.930 | 0.885 |  | 0.889 |" in table
    assert table in capsys.readouterr().out


@pytest.mark.parametrize(("spec", "message"), [
    ("iid.json:fedavg-iid", "expected LABEL=RESULTS.json:RUN"),
    ("IID=iid.json", "expected LABEL=RESULTS.json:RUN"),
    ("IID={iid}:fedavg-noniid", "has no run 'fedavg-noniid' (it has base, fedavg-iid)"),
    ("IID={tmp}/missing.json:fedavg-iid", "cannot read bench federated results"),
    ("IID={tmp}/list.json:fedavg-iid", "not a JSON object"),
    ("IID={tmp}/manifest.json:fedavg-iid", "it holds no runs"),
])
def test_a_bad_run_is_a_clear_error_and_writes_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture, spec: str, message: str) -> None:
    iid = results_file(tmp_path / "iid.json", "fedavg-iid", [(0.75, 0.69), (0.93, 0.885)])
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "manifest.json").write_text('{"rounds": 3}')
    out = tmp_path / "compare.png"
    assert main(["bench", "federated-compare", spec.format(iid=iid, tmp=tmp_path), "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not out.with_suffix(".md").exists()
