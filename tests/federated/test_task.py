"""task.py on its own (no Flower): settings, weights, training, checkpoints."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from federated import task
from federated.partition import load_partition
from middleware.encoder.heads import DualHeads, load_heads, save_heads
from middleware.encoder.loss import distillation_loss
from middleware.encoder.training import TrainConfig, train_epochs
from pmirs.errors import FederatedError


def test_settings_parse_kebab_case_and_refuse_unknown_keys() -> None:
    settings = task.FederatedSettings.from_config({"num-server-rounds": 3, "strategy": "fedprox", "secagg": "false"})
    assert settings.num_server_rounds == 3 and settings.strategy == "fedprox" and settings.secagg is False
    assert task.FederatedSettings.from_config(settings.to_config()) == settings
    with pytest.raises(FederatedError):
        task.FederatedSettings.from_config({"num-rounds": 3})
    with pytest.raises(FederatedError):
        task.FederatedSettings.from_config({"strategy": "fedsgd"})
    with pytest.raises(FederatedError):
        task.FederatedSettings.from_config({"secagg": True, "dp-noise-multiplier": 0.5, "client-weighting": "uniform"})
    for bad in ({"client-weighting": "by-size"}, {"local-steps": -1}):
        with pytest.raises(FederatedError):
            task.FederatedSettings.from_config(bad)


def test_dp_runs_must_average_clients_uniformly() -> None:
    """The DP noise is calibrated to one client's share of an unweighted mean (clip / clients); a
    client weighted by a large photo count would move the mean further than the noise hides."""
    with pytest.raises(FederatedError, match="uniform"):
        task.FederatedSettings.from_config({"dp-noise-multiplier": 0.5})
    settings = task.FederatedSettings.from_config({"dp-noise-multiplier": 0.5, "client-weighting": "uniform"})
    assert task.aggregation_weight(settings, 500) == 1
    assert task.aggregation_weight(task.FederatedSettings(), 500) == 500


@pytest.mark.parametrize(("local_steps", "expected_steps"), [(0, 2 * 2), (5, 5), (1, 1)])
def test_a_client_takes_local_steps_whatever_its_size(monkeypatch: pytest.MonkeyPatch, stores: Path,
                                                      base_heads: Path, local_steps: int, expected_steps: int) -> None:
    """With local-steps a client of 8 photos (batch 4: 2 steps per epoch) takes exactly that many steps,
    passing over its photos again as needed; without, local-epochs passes."""
    steps = []
    real_step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: (steps.append(1), real_step(self, *a, **k)))
    base = task.load_base(base_heads)
    settings = task.FederatedSettings(local_epochs=2, local_steps=local_steps, batch_size=4)
    data = task.make_examples(load_partition(stores / "client-0"), base)
    metrics = task.train(task.build_heads(base, settings), data, settings)
    assert len(steps) == expected_steps
    assert metrics[task.NUM_EXAMPLES_KEY] == 8 and np.isfinite(metrics["train-loss"])


@pytest.mark.parametrize("train_text", [False, True])
def test_training_moves_the_heads_and_weights_round_trip(stores: Path, base_heads: Path, train_text: bool) -> None:
    base = task.load_base(base_heads)
    settings = task.FederatedSettings(local_epochs=2, batch_size=4, train_text=train_text)
    heads = task.build_heads(base, settings)
    before = task.get_weights(heads)
    data = task.make_examples(load_partition(stores / "client-0"), base)
    metrics = task.train(heads, data, settings)
    after = task.get_weights(heads)
    assert metrics[task.NUM_EXAMPLES_KEY] == len(data) == 8
    assert metrics[task.SMALL_SHARE_KEY] == 0.0  # stub stores hold no thumbnails
    assert np.isfinite(metrics["train-loss"])
    assert any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    moved = np.sqrt(sum(float(np.sum((a.astype(np.float64) - b) ** 2)) for a, b in zip(after, before, strict=True)))
    assert metrics[task.UPDATE_NORM_KEY] == pytest.approx(moved, rel=1e-6) and moved > 0
    # The text head moves only when asked to: frozen, text queries keep the base's space.
    assert torch.equal(heads.text_residual.weight, base.build().text_residual.weight) is not train_text
    fresh = task.build_heads(base, settings)
    task.set_weights(fresh, after)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), heads.state_dict().values(),
                                                 strict=True))
    assert 0.0 <= task.test(heads, data)["eval-top1"] <= 1.0


def test_checkpoint_is_versioned_and_loadable(tmp_path: Path, base_heads: Path) -> None:
    base = task.load_base(base_heads)
    heads = base.build()
    with torch.no_grad():
        heads.text_residual.bias.fill_(0.01)
    path = task.save_checkpoint(tmp_path / "out", heads, base, {"rounds": 1, "partition": "domain"})
    loaded = load_heads(path)
    assert path.name == f"fed-heads-{loaded.version}.pt"
    assert loaded.config.extra["federated"]["partition"] == "domain"
    assert torch.allclose(loaded.state_dict["text_residual.bias"], torch.full((384,), 0.01))
    assert json.loads(path.with_suffix(".json").read_text())["version"] == loaded.version
    assert base.config.extra == {}  # the base checkpoint object is not modified


def test_a_checkpoint_says_it_was_fine_tuned_not_what_its_base_was_trained_on(tmp_path: Path,
                                                                               base_heads: Path) -> None:
    base = task.load_base(base_heads)
    base = base.reconfigured(extra={"trained_on": "pretrain/: 109 classes; benchmark domains never seen"})
    path = task.save_checkpoint(tmp_path, base.build(), base, {"rounds": 3, "clients": 6, "partition": "iid",
                                                               "tuned_photos": "small"})
    extra = load_heads(path).config.extra
    assert extra["trained_on"].startswith(f"federated fine-tuning from the zero-shot base {base.version}: 3 rounds")
    assert "6 clients" in extra["trained_on"] and "never seen" not in extra["trained_on"]
    assert extra["base_trained_on"] == "pretrain/: 109 classes; benchmark domains never seen"


def test_a_client_refuses_a_base_that_differs_from_the_servers(base_heads: Path) -> None:
    base = task.load_base(base_heads)
    task.check_base(base, base.version)
    task.check_base(base, None)  # older servers do not pin it
    with pytest.raises(FederatedError, match="differ"):
        task.check_base(base, "0123456789ab")


def test_only_trainable_parameters_travel(base_heads: Path) -> None:
    heads = task.build_heads(task.load_base(base_heads), task.FederatedSettings(train_text=True))
    sent = task.exchange_state(heads)
    assert list(sent) == [k for k, _ in heads.named_parameters()]
    assert all(v.dim() >= 1 for v in sent.values())  # the temperature travels as shape (1,)
    frozen_text = task.exchange_state(task.build_heads(task.load_base(base_heads), task.FederatedSettings()))
    assert list(frozen_text) == [k for k in sent if not k.startswith("text_residual")]


def test_tower_head_runs_train_the_towers_last_layer_from_pre_head_maps(stores: Path, base_heads: Path) -> None:
    base = task.load_base(base_heads)
    settings = task.FederatedSettings(local_epochs=2, batch_size=4, tower_head=True)
    heads = task.build_heads(base, settings)
    sent = task.exchange_state(heads)
    assert {"tower_head.conv.weight", "tower_head.bn.weight", "tower_head.bn.bias"} <= set(sent)
    assert "tower_head.bn.running_mean" not in sent  # statistics stay the tower's
    partition = load_partition(stores / "client-0")
    assert partition.maps is not None and partition.maps.shape[1:] == (320, 7, 7)
    before = heads.tower_head.conv.weight.detach().clone()
    task.train(heads, task.make_examples(partition, base), settings)
    assert not torch.equal(before, heads.tower_head.conv.weight)
    path = task.save_checkpoint(stores.parent / "out", heads, base, {"rounds": 1})
    loaded = load_heads(path)
    assert loaded.config.tower_head and torch.equal(loaded.state_dict["tower_head.conv.weight"],
                                                    heads.tower_head.conv.weight)


def test_tower_runs_refuse_stores_without_the_maps_they_read(tmp_path: Path, stores: Path, base_heads: Path) -> None:
    base = task.load_base(base_heads)
    with_maps = task.make_examples(load_partition(stores / "client-0"), base)  # pre-head maps (320 channels)
    task.check_store_maps(with_maps, task.build_heads(base, task.FederatedSettings(tower_head=True)))
    blocks = task.build_heads(base, task.FederatedSettings(tower_head=True, tower_blocks=1))
    with pytest.raises(FederatedError, match="from block 15 on .maps with 192 channels.* maps with 320 channels"):
        task.check_store_maps(with_maps, blocks)
    (stores / "client-0" / "maps.npy").unlink()
    without = task.make_examples(load_partition(stores / "client-0"), base)
    task.check_store_maps(without, task.build_heads(base, task.FederatedSettings()))
    with pytest.raises(FederatedError, match="holds no maps"):
        task.check_store_maps(without, blocks)
    with pytest.raises(ValueError, match="hold no input maps"):
        task.train(task.build_heads(base, task.FederatedSettings(tower_head=True)), without,
                   task.FederatedSettings(tower_head=True))


def test_tower_block_runs_train_and_exchange_the_last_blocks(stores: Path, base_heads: Path) -> None:
    base = task.load_base(base_heads)
    settings = task.FederatedSettings(local_epochs=1, batch_size=4, tower_head=True, tower_blocks=2)
    heads = task.build_heads(base, settings)
    sent = task.exchange_state(heads)
    assert {"tower_blocks.blocks.0._project_conv.weight", "tower_blocks.blocks.1._project_conv.weight"} <= set(sent)
    assert not any("running_" in key for key in sent)  # statistics stay the tower's
    data = task.make_examples(load_partition(stores / "client-0"), base)
    data.maps = np.random.default_rng(0).normal(size=(len(data), 192, 7, 7)).astype(np.float16)  # block 14 input
    task.check_store_maps(data, heads)
    before = heads.tower_blocks.blocks[0]._project_conv.weight.detach().clone()
    task.train(heads, data, settings)
    assert not torch.equal(before, heads.tower_blocks.blocks[0]._project_conv.weight)
    with pytest.raises(FederatedError, match="tower-blocks must be 0..5, and > 0 only with tower-head"):
        task.FederatedSettings.from_config({"tower-blocks": 1})


def test_the_flwr_app_config_lists_every_setting_with_its_default() -> None:
    import tomllib

    app = Path(__file__).resolve().parents[2] / "federated" / "app" / "pyproject.toml"
    config = tomllib.loads(app.read_text())["tool"]["flwr"]["app"]["config"]
    assert set(config) == set(task.FederatedSettings().to_config())
    assert task.FederatedSettings.from_config(config) == task.FederatedSettings()


def test_stores_must_be_built_for_a_base_with_a_small_photo_layer(tmp_path: Path, stores: Path,
                                                                  base_heads: Path) -> None:
    """Such a base changes the stored features, so a store records which base it was built for."""
    plain = task.load_base(base_heads)
    gated_path = tmp_path / "gated.pt"
    save_heads(gated_path, DualHeads(replace(plain.config, small_photo_max_side=112)), plain.class_bank)
    gated = task.load_base(gated_path)
    partition = load_partition(stores / "client-0")
    assert partition.features_for == task.store_features_tag(plain) == "frozen"
    with pytest.raises(FederatedError, match="rebuild"):
        task.make_examples(partition, gated)
    partition.features_for = task.store_features_tag(gated)
    assert task.store_features_tag(gated) == gated.version
    heads = task.build_heads(gated, task.FederatedSettings(tower_head=True))
    assert torch.equal(heads.tower_head.conv.weight, heads.small_photo_head.conv.weight)  # tuning starts there
    small_before = heads.small_photo_head.conv.weight.clone()
    task.train(heads, task.make_examples(partition, gated),
               task.FederatedSettings(local_epochs=1, batch_size=4, tower_head=True))
    assert not torch.equal(heads.tower_head.conv.weight, small_before)
    assert torch.equal(heads.small_photo_head.conv.weight, small_before)  # frozen
    assert not any(k.startswith("small_photo_head") for k in task.exchange_state(heads))  # never travels


def test_mirroring_reads_the_mirror_images_maps_only_when_the_run_asks(stores: Path, base_heads: Path) -> None:
    """NaN mirror-image maps poison a run that mirrors and leave one that does not untouched."""
    base = task.load_base(base_heads)
    mirroring = task.FederatedSettings(local_epochs=1, batch_size=4, tower_head=True, mirror=True)
    heads = task.build_heads(base, mirroring)
    data = task.make_examples(load_partition(stores / "client-0"), base)
    with pytest.raises(FederatedError, match="no mirror-image maps"):
        task.check_store_maps(data, heads, mirror=True)
    data.mirrored_maps = np.full_like(np.asarray(data.maps), np.nan)
    task.check_store_maps(data, heads, mirror=True)
    assert np.isnan(task.train(heads, data, mirroring)["train-loss"])
    plain = replace(mirroring, mirror=False)
    assert np.isfinite(task.train(task.build_heads(base, plain), data, plain)["train-loss"])
    with pytest.raises(FederatedError, match="needs tower-head"):
        task.FederatedSettings.from_config({"mirror": True})


def test_a_mirrored_photo_embeds_as_its_mirror_images_maps(stores: Path, base_heads: Path) -> None:
    from middleware.encoder.training import ImageExamples

    base = task.load_base(base_heads)
    heads = task.build_heads(base, task.FederatedSettings(tower_head=True))
    data = task.make_examples(load_partition(stores / "client-0"), base)
    flipped = np.asarray(data.maps)[:, :, :, ::-1].copy()
    images = ImageExamples(data.conse, data.pooled, data.maps, flipped)
    idx, mirror = np.array([2, 0, 1]), np.array([True, False, True])
    with torch.no_grad():
        heads.image_features.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
        mixed = images.embed(heads, idx, mirror)
        as_flipped = ImageExamples(data.conse, data.pooled, flipped).embed(heads, idx)
        as_given = images.embed(heads, idx)
    assert torch.allclose(mixed[mirror], as_flipped[mirror]) and torch.allclose(mixed[~mirror], as_given[~mirror])
    assert not torch.allclose(mixed[0], as_given[0])


def test_evaluation_embeds_in_batches_exactly_as_all_at_once(stores: Path, base_heads: Path) -> None:
    """Scoring runs a set through the tuned blocks a batch at a time (all at once held >10 GB for 5,000 photos)."""
    base = task.load_base(base_heads)
    heads = task.build_heads(base, task.FederatedSettings(tower_head=True, tower_blocks=2, tower_classifier=True))
    data = task.make_examples(load_partition(stores / "client-0"), base)
    data.maps = np.random.default_rng(0).normal(size=(len(data), 192, 7, 7)).astype(np.float16)  # block 14 input
    images = data.images
    with torch.no_grad():
        heads.image_features.weight.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
        whole = images.embed(heads)
    batched = images.embed_all(heads, batch_size=3)
    assert len(whole) > 3 and batched.shape == whole.shape
    assert torch.allclose(batched, whole, atol=1e-5)


def test_tower_layers_learn_at_their_own_rate(stores: Path, base_heads: Path) -> None:
    base = task.load_base(base_heads)
    data = task.make_examples(load_partition(stores / "client-0"), base)

    def moved(scale: float) -> tuple[float, float]:
        settings = task.FederatedSettings(local_epochs=2, batch_size=4, tower_head=True, tower_lr_scale=scale)
        heads = task.build_heads(base, settings)
        tower, features = heads.tower_head.conv.weight.detach().clone(), heads.image_features.weight.detach().clone()
        task.train(heads, data, settings)
        return (float((heads.tower_head.conv.weight.detach() - tower).abs().max()),
                float((heads.image_features.weight.detach() - features).abs().max()))

    slow_tower, slow_features = moved(1e-6)
    full_tower, full_features = moved(1.0)
    assert slow_tower < 1e-6 < full_tower / 100
    assert slow_features > 1e-4 and full_features > 1e-4  # the heads learn at the full rate either way
    with pytest.raises(FederatedError, match="tower-lr-scale"):
        task.FederatedSettings.from_config({"tower-lr-scale": 0.0})


def test_class_cross_entropy_pushes_photos_from_classes_their_batch_does_not_hold(stores: Path,
                                                                                base_heads: Path) -> None:
    """Every photo labelled class 0: the CLIP loss only sees class-0 phrases (no negatives), while
    class-ce scores each photo against every class's phrase, so only it widens the margin to class 1."""
    base = task.load_base(base_heads)
    data = task.make_examples(load_partition(stores / "client-0"), base)
    data = replace(data, labels=np.zeros(len(data), dtype=data.labels.dtype))
    assert data.phrases.class_count >= 2
    prototypes = torch.from_numpy(task.class_means(data.phrases))

    def margin_gain(loss: str) -> float:
        settings = task.FederatedSettings.from_config({"local-epochs": 5, "batch-size": 4, "loss": loss})
        heads = task.build_heads(base, settings)

        def margin() -> float:
            with torch.no_grad():
                sims = data.images.embed(heads) @ heads.encode_text(prototypes).T
            return float((sims[:, 0] - sims[:, 1:].max(dim=1).values).mean())

        before = margin()
        task.train(heads, data, settings)
        return margin() - before

    clip_gain, ce_gain = margin_gain("clip"), margin_gain("class-ce")
    assert clip_gain < 0.05 and ce_gain > 0.3
    with pytest.raises(FederatedError, match="loss"):
        task.FederatedSettings.from_config({"loss": "hinge"})
    # The training loop refuses it too (it would otherwise fall through to class-ce), before any step.
    heads = task.build_heads(base, task.FederatedSettings())
    before = task.get_weights(heads)
    with pytest.raises(ValueError, match="unknown loss"):
        train_epochs(heads, data, TrainConfig(loss="hinge"))
    assert all(np.array_equal(a, b) for a, b in zip(before, task.get_weights(heads), strict=True))


def _distance_to_the_tower(heads, data) -> float:
    with torch.no_grad():
        _, logits = data.images.embed_with_logits(heads)
        frozen = torch.from_numpy(data.logits)
        return float(distillation_loss(logits, frozen, heads.config.conse_temperature))


def test_tower_classifier_runs_train_and_exchange_the_classifier_and_distil_toward_the_tower(
        stores: Path, base_heads: Path) -> None:
    """ConSE reads the tuned classifier; distillation keeps its class probabilities near the frozen tower's."""
    base = task.load_base(base_heads)
    data = task.make_examples(load_partition(stores / "client-0"), base)
    distances = {}
    for distill in (0.0, 5.0):
        settings = task.FederatedSettings(local_epochs=3, batch_size=4, learning_rate=1e-2, tower_head=True,
                                          tower_classifier=True, distill=distill)
        heads = task.build_heads(base, settings)
        assert {"tower_classifier.weight", "tower_classifier.bias"} <= set(task.exchange_state(heads))
        before = heads.tower_classifier.weight.detach().clone()
        task.train(heads, data, settings)
        assert not torch.equal(before, heads.tower_classifier.weight)
        distances[distill] = _distance_to_the_tower(heads, data)
    assert distances[5.0] < distances[0.0] / 2, distances
    loaded = load_heads(task.save_checkpoint(stores.parent / "out", heads, base, {"rounds": 1}))
    assert loaded.config.tower_classifier
    assert torch.equal(loaded.state_dict["tower_classifier.weight"], heads.tower_classifier.weight)
    with pytest.raises(FederatedError, match="needs tower-head"):
        task.FederatedSettings.from_config({"tower-classifier": True})
    with pytest.raises(FederatedError, match="only with tower-classifier"):
        task.FederatedSettings.from_config({"tower-head": True, "distill": 1.0})


def test_distillation_without_the_towers_logits_is_refused_before_any_step(stores: Path, base_heads: Path) -> None:
    base = task.load_base(base_heads)
    settings = task.FederatedSettings(local_epochs=1, batch_size=4, tower_head=True, tower_classifier=True, distill=1.0)
    heads = task.build_heads(base, settings)
    before = {k: v.clone() for k, v in heads.state_dict().items()}
    data = replace(task.make_examples(load_partition(stores / "client-0"), base), logits=None)
    with pytest.raises(ValueError, match="distillation needs the frozen tower's logits"):
        task.train(heads, data, settings)
    assert all(torch.equal(before[k], v) for k, v in heads.state_dict().items())


def test_a_cosine_schedule_starts_at_the_full_rate_and_settles_over_the_rounds() -> None:
    cosine = task.FederatedSettings(num_server_rounds=4, learning_rate=1e-3, lr_schedule="cosine")
    rates = [task.train_config(cosine, server_round=r).lr for r in range(1, 5)]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(1e-3 * (1 - 2 ** -0.5) / 2)
    assert rates == sorted(rates, reverse=True) and len(set(rates)) == 4
    constant = replace(cosine, lr_schedule="constant")
    assert {task.train_config(constant, server_round=r).lr for r in range(1, 5)} == {1e-3}
    with pytest.raises(FederatedError, match="unknown lr-schedule"):
        task.FederatedSettings.from_config({"lr-schedule": "step"})
