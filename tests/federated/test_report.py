"""The federated benchmark's markdown says which checkpoint it would ship, and why none when none."""

from __future__ import annotations

import pytest

from benchmarks.federated import pick_best
from federated.report import federated_markdown


def _scores(f1: float, heldout: float) -> dict:
    return {"f1": {"food": {"5": f1, "10": f1}}, "map": {"food": f1}, "mean_f1": {"5": f1, "10": f1},
            "heldout_f1@10": heldout}


def _results(runs: dict) -> dict:
    results = {"clients": 2, "rounds": 1, "base_version": "abc", "settings": {"loss": "class-ce", "anchor": 0.03},
               "runs": {"base": {"history": [_scores(0.7, 0.83)]}, **runs}}
    results["best"] = pick_best(results)
    return results


@pytest.mark.parametrize(("runs", "expected"), [
    ({"centralized": {"history": [_scores(0.9, 0.83)]}}, "No federated run saved a checkpoint"),
    ({"fedavg-iid": {"history": [_scores(0.9, 0.70)], "checkpoint": "forgets.pt"}}, "passed the forgetting check"),
    ({"fedavg-iid": {"history": [_scores(0.85, 0.82)], "checkpoint": "keeps.pt"},
      "fedavg-noniid": {"history": [_scores(0.9, 0.70)], "checkpoint": "forgets.pt"}}, "`keeps.pt` (fedavg-iid)"),
])
def test_the_report_names_the_shippable_checkpoint_or_why_there_is_none(runs: dict, expected: str) -> None:
    markdown = federated_markdown(_results(runs))
    assert expected in markdown
    assert "class-ce loss" in markdown


def test_the_report_says_how_many_draws_scored_the_rounds_and_how_noisy_a_domain_is() -> None:
    older = _results({"fedavg-iid": {"history": [_scores(0.85, 0.82)], "checkpoint": "keeps.pt"}})
    assert "Scored with 6 label draws per N." in federated_markdown(older)  # written before draws were recorded
    results = _results({"fedavg-iid": {"history": [{**_scores(0.85, 0.82),
                                                     "f1_se": {"food": {"5": 0.012, "10": 0.021, "all": 0.5}}}],
                                       "checkpoint": "keeps.pt"}})
    results["draws"] = 100
    assert ("Scored with 100 label draws per N; largest standard error of a final domain F1@5/@10: 0.021."
            in federated_markdown(results))


def test_the_report_names_rounds_that_aggregated_nothing() -> None:
    clean = _results({"fedavg-iid": {"history": [_scores(0.85, 0.82)], "checkpoint": "a.pt", "failed_rounds": []}})
    assert "aggregated no client update" not in federated_markdown(clean)
    stalled = _results({"secagg-iid": {"history": [_scores(0.85, 0.82)], "checkpoint": "a.pt", "failed_rounds": [2]}})
    assert "secagg-iid: rounds [2] aggregated no client update" in federated_markdown(stalled)
