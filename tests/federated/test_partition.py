"""Partitions: every photo goes to exactly one client, and a store holds only its client's photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from federated.partition import PARTITION_FILE, load_partition, partition_indices
from middleware.datasets import LabelledImage, scan_image_folder
from middleware.encoder.heads import MAX_TUNED_BLOCKS
from pmirs.errors import DatasetError, FederatedError


def _items(domains: int = 3, classes: int = 4, per_class: int = 10) -> list[LabelledImage]:
    return [LabelledImage(Path(f"/d{d}/c{c}/{k}.jpg"), f"c{d}-{c}", f"d{d}")
            for d in range(domains) for c in range(classes) for k in range(per_class)]


@pytest.mark.parametrize("scheme", ["iid", "domain", "dirichlet"])
def test_every_photo_has_exactly_one_client(scheme: str) -> None:
    items = _items()
    parts = partition_indices(items, 6, scheme, alpha=1.0)
    joined = np.sort(np.concatenate(parts))
    assert len(parts) == 6
    assert np.array_equal(joined, np.arange(len(items)))


def test_domain_partition_gives_two_clients_per_domain() -> None:
    items = _items()
    parts = partition_indices(items, 6, "domain")
    domains = [{items[i].domain for i in part} for part in parts]
    assert all(len(d) == 1 for d in domains)
    assert [d.pop() for d in domains] == ["d0", "d1", "d2", "d0", "d1", "d2"]


def test_iid_partition_is_balanced() -> None:
    sizes = [len(p) for p in partition_indices(_items(), 6, "iid")]
    assert max(sizes) - min(sizes) <= 1


def test_bad_partitions_are_refused() -> None:
    flat = [LabelledImage(Path(f"/c/{k}.jpg"), "c", None) for k in range(10)]
    with pytest.raises(FederatedError):
        partition_indices(flat, 2, "domain")
    with pytest.raises(FederatedError):
        partition_indices(_items(), 6, "random")
    with pytest.raises(FederatedError):
        partition_indices(_items(), 2, "domain")  # 3 domains need 3 clients


def test_store_lists_only_its_clients_photos(stores: Path, photos: Path) -> None:
    listed = [json.loads((stores / f"client-{k}" / PARTITION_FILE).read_text())["items"] for k in range(2)]
    paths = [{Path(i["path"]) for i in rows} for rows in listed]
    assert not paths[0] & paths[1]
    assert paths[0] | paths[1] == {i.path for i in scan_image_folder(photos)}
    assert {p.parent.parent.name for p in paths[0]} == {"animals"}
    assert {p.parent.parent.name for p in paths[1]} == {"food"}


def test_load_partition_rejects_a_folder_that_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(DatasetError):
        load_partition(tmp_path)


def test_prepared_store_reads_only_its_own_folder(own_stores: list[Path]) -> None:
    store = load_partition(own_stores[0])
    assert store.classes == ["cat", "dog"]
    assert len(store) == 8 and store.pooled.shape == (8, 1280) and store.logits.shape == (8, 1000)


def test_a_store_records_how_many_photos_are_thumbnails(tmp_path: Path, photos: Path, stub_towers) -> None:
    from dataclasses import replace

    from federated.partition import write_partitions

    stub_extract, stub_encode = stub_towers
    items = scan_image_folder(photos)
    small = np.arange(len(items)) % 4 == 0  # as a small-photo layer would flag them
    parts = partition_indices(items, 2, "domain")
    write_partitions(tmp_path / "parts", items, replace(stub_extract(items), small=small), parts, {}, stub_encode)
    for k, part in enumerate(parts):
        store = load_partition(tmp_path / "parts" / f"client-{k}")
        assert store.small_photos == small[part].sum() > 0
        assert store.small_share == small[part].mean()
    # A store from before the count (format /1) is refused with the command that rebuilds it.
    store = tmp_path / "parts" / "client-0"
    listing = json.loads((store / PARTITION_FILE).read_text())
    (store / PARTITION_FILE).write_text(json.dumps({**listing, "format": "pmirs-fed-partition/1"}))
    with pytest.raises(DatasetError, match="federated prepare"):
        load_partition(store)


def test_a_store_whose_maps_do_not_match_its_photos_is_refused_and_left_as_it_was(stores: Path) -> None:
    store = stores / "client-0"
    maps = np.load(store / "maps.npy")
    np.save(store / "maps.npy", maps[:-1])  # one photo's maps missing
    before = (store / "maps.npy").read_bytes()
    with pytest.raises(DatasetError, match="holds"):
        load_partition(store)
    assert (store / "maps.npy").read_bytes() == before


def test_the_cli_refuses_tower_blocks_without_the_tower_head(photos: Path, tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Before any photo is read: the blocks feed the tuned tower head, so they need it."""
    from pmirs.cli import main

    out = tmp_path / "store"
    assert main(["federated", "prepare", "--data", str(photos), "--out", str(out), "--tower-blocks", "1"]) == 2
    assert "add --tower-head" in capsys.readouterr().err and not out.exists()
    assert main(["federated", "prepare", "--data", str(photos), "--out", str(out), "--mirror"]) == 2
    assert "--mirror flips the input maps" in capsys.readouterr().err and not out.exists()
    with pytest.raises(SystemExit):
        main(["federated", "prepare", "--data", str(photos), "--out", str(out), "--tower-head", "--tower-blocks",
              str(MAX_TUNED_BLOCKS + 1)])


def test_a_store_keeps_mirror_image_maps_only_when_given_them(tmp_path: Path, photos: Path, stub_towers) -> None:
    from federated.partition import write_partition

    stub_extract, stub_encode = stub_towers
    items = scan_image_folder(photos)
    outputs = stub_extract(items)
    outputs.mirrored_maps = np.asarray(outputs.maps)[:, :, :, ::-1]
    store = write_partition(tmp_path / "store", items, outputs, {}, stub_encode)
    loaded = load_partition(store)
    np.testing.assert_array_equal(loaded.mirrored_maps, outputs.mirrored_maps)
    outputs.mirrored_maps = None
    assert load_partition(write_partition(store, items, outputs, {}, stub_encode)).mirrored_maps is None
    np.save(store / "maps-mirrored.npy", np.asarray(loaded.mirrored_maps)[:-1])
    before = (store / "maps-mirrored.npy").read_bytes()
    with pytest.raises(DatasetError, match="holds features of another number"):
        load_partition(store)
    assert (store / "maps-mirrored.npy").read_bytes() == before
