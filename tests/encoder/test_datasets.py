"""The ImageFolder loader on temp folders laid out like ours and like any user's."""

from __future__ import annotations

import pytest
from PIL import Image

from middleware.datasets import (
    label_from_folder,
    limit_per_class,
    load_split,
    open_image,
    photo_caption,
    read_synonyms,
    scan_image_folder,
)
from pmirs.errors import DatasetError, InvalidImageError


def _img(path, mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (8, 8), 90).save(path)


def test_flat_user_folder_with_mixed_case_suffixes(tmp_path):
    _img(tmp_path / "car_side" / "a.JPG")
    _img(tmp_path / "car_side" / "b.jpeg")
    _img(tmp_path / "Faces" / "c.PNG")
    (tmp_path / "Faces" / "notes.txt").write_text("not an image")
    items = scan_image_folder(tmp_path)
    assert [(i.path.name, i.label, i.domain) for i in items] == [
        ("c.PNG", "Faces", None), ("a.JPG", "car side", None), ("b.jpeg", "car side", None),
    ]


def test_split_layout_and_pretrain(tmp_path):
    _img(tmp_path / "val" / "mammals" / "tabby" / "1.JPEG")
    _img(tmp_path / "val" / "food" / "ice_cream" / "2.JPEG")
    _img(tmp_path / "pretrain" / "CD player" / "3.JPEG")
    val = load_split(tmp_path, "val")
    assert {d: [i.label for i in items] for d, items in val.items()} == {"food": ["ice cream"], "mammals": ["tabby"]}
    assert list(load_split(tmp_path, "pretrain")) == ["pretrain"]


def test_grayscale_is_converted_to_rgb(tmp_path):
    _img(tmp_path / "x" / "g.png", mode="L")
    assert open_image(tmp_path / "x" / "g.png").mode == "RGB"


def test_non_image_file_is_a_clear_error(tmp_path):
    fake = tmp_path / "x" / "fake.jpg"
    fake.parent.mkdir()
    fake.write_bytes(b"<html>not a photo</html>")
    with pytest.raises(InvalidImageError, match="not a readable image"):
        open_image(fake)


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetError, match="not a directory"):
        scan_image_folder(tmp_path / "missing")
    (tmp_path / "empty" / "label").mkdir(parents=True)
    with pytest.raises(DatasetError, match="no images found"):
        scan_image_folder(tmp_path / "empty")


def test_synonyms_are_optional(tmp_path):
    assert read_synonyms(tmp_path) == {}
    (tmp_path / "classes.csv").write_text("label,domain,synonyms\ntabby,mammals,tabby; tabby cat\n")
    assert read_synonyms(tmp_path) == {"tabby": ["tabby", "tabby cat"]}


def test_label_from_folder_and_limit_per_class(tmp_path):
    assert label_from_folder("car__side_") == "car side"
    for name in "abc":
        _img(tmp_path / "cat" / f"{name}.jpg")
    _img(tmp_path / "dog" / "d.jpg")
    kept = limit_per_class(scan_image_folder(tmp_path), 2)
    assert [i.path.name for i in kept] == ["a.jpg", "b.jpg", "d.jpg"]


def test_photo_caption_uses_the_right_article():
    assert photo_caption("koala") == "a photo of a koala"
    assert photo_caption("African elephant") == "a photo of an African elephant"
