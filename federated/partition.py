"""Split an ImageFolder across federated clients and give each client its own on-disk store.

A client's store (a *partition directory*) is everything that client may read: the list of its
own photos, the frozen tower outputs for them, and the text-tower embeddings of its class
phrases. Nothing in it points to another client's photos, so a SuperNode given one directory in
its node config cannot touch another client's data. No Flower imports: tested on its own.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from middleware.datasets import LabelledImage, labels_of, read_synonyms, scan_image_folder
from middleware.encoder.features import TowerOutputs
from middleware.encoder.training import class_phrases
from pmirs.errors import DatasetError, FederatedError

PARTITION_SCHEMES = ("iid", "domain", "dirichlet")
PARTITION_FILE = "partition.json"
FEATURES_FILE = "features.npz"
PHRASES_FILE = "phrases.npz"
MAPS_FILE = "maps.npy"  # optional input maps of the first tuned tower layer (n, c, h, w) float16
MIRRORED_MAPS_FILE = "maps-mirrored.npy"  # optional: the same maps of each photo's mirror image
PARTITION_FORMAT = "pmirs-fed-partition/2"  # /2 records how many photos took the small-photo path
FROZEN_FEATURES = "frozen"  # stored features came from the frozen tower alone (no small-photo layer)

# (photos) -> the frozen image tower's outputs for them (pooled, logits and optionally pre-head maps).
ExtractFn = Callable[[Sequence[LabelledImage]], TowerOutputs]
# (phrases) -> raw text-tower embeddings (n, 384).
EncodeFn = Callable[[Sequence[str]], np.ndarray]


def partition_indices(
    items: Sequence[LabelledImage], num_clients: int, scheme: str = "iid", alpha: float = 0.5, seed: int = 0
) -> list[np.ndarray]:
    """Assign every photo to exactly one client; returns each client's sorted item indices.

    ``iid``: a uniform shuffle. ``domain``: client ``k`` holds photos of domain ``k % D`` only
    (6 clients on 3 domains = two per domain), the realistic non-IID case of users who photograph
    different things. ``dirichlet``: per class, client shares drawn from Dir(alpha) (label skew).

    Raises:
        FederatedError: unknown scheme, too few clients, or ``domain`` on a folder without domains.
    """
    if scheme not in PARTITION_SCHEMES:
        raise FederatedError(f"unknown partition {scheme!r}; choose one of {', '.join(PARTITION_SCHEMES)}")
    if num_clients < 1 or num_clients > len(items):
        raise FederatedError(f"cannot split {len(items)} photos across {num_clients} clients")
    rng = np.random.default_rng(seed)
    owner = np.empty(len(items), dtype=int)
    if scheme == "iid":
        owner[rng.permutation(len(items))] = np.arange(len(items)) % num_clients
    elif scheme == "domain":
        domains = list(dict.fromkeys(item.domain for item in items))
        if None in domains:
            raise FederatedError("partition 'domain' needs a <root>/<domain>/<label>/ folder layout")
        if num_clients < len(domains):
            raise FederatedError(f"partition 'domain' needs at least {len(domains)} clients (one per domain)")
        for d, domain in enumerate(domains):
            clients = np.arange(d, num_clients, len(domains))
            members = np.flatnonzero([item.domain == domain for item in items])
            owner[rng.permutation(members)] = clients[np.arange(len(members)) % len(clients)]
    else:
        by_class: dict[tuple, list[int]] = defaultdict(list)
        for index, item in enumerate(items):
            by_class[(item.domain, item.label)].append(index)
        for members in by_class.values():
            shares = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for client, part in enumerate(np.split(rng.permutation(members), cuts)):
                owner[part] = client
    parts = [np.flatnonzero(owner == k) for k in range(num_clients)]
    if any(len(p) == 0 for p in parts):
        raise FederatedError(f"partition {scheme!r} left a client without photos; use fewer clients")
    return parts


@dataclass
class ClientPartition:
    """What one client holds: its own photos, frozen tower outputs and class-phrase embeddings."""

    items: list[LabelledImage]
    classes: list[str]  # the client's class names; labels index into this list
    labels: np.ndarray  # (n,) class index of each photo
    pooled: np.ndarray  # (n, 1280) pooled image-tower features
    logits: np.ndarray  # (n, 1000) image-tower ImageNet logits (for ConSE)
    phrase_emb: np.ndarray  # (p, 384) raw text-tower embeddings of the class phrases
    phrase_owner: np.ndarray  # (p,) class index of each phrase, sorted
    maps: np.ndarray | None = None  # (n, c, h, w) float16 tuned-layer input maps (memory-mapped), if stored
    features_for: str = FROZEN_FEATURES  # version of the base heads whose small-photo layer made them
    small_photos: int = 0  # how many photos took that small-photo path (the rest are sharp)
    mirrored_maps: np.ndarray | None = None  # the maps of the mirror images (memory-mapped), if stored

    @property
    def small_share(self) -> float:
        """Share of this client's photos that are thumbnails (what its updates learn from)."""
        return self.small_photos / len(self.items) if self.items else 0.0

    def __len__(self) -> int:
        return len(self.items)


def write_partition(
    directory: str | Path,
    items: Sequence[LabelledImage],
    outputs: TowerOutputs,
    synonyms: dict[str, list[str]],
    encode_texts: EncodeFn,
    features_for: str = FROZEN_FEATURES,
) -> Path:
    """Write one client's store (photo list, tower outputs, phrase embeddings); returns the dir.

    Input maps (``outputs.maps``, and ``outputs.mirrored_maps`` for mirroring) are needed only by
    runs that tune the tower's last layers;
    ``features_for`` names the base heads whose small-photo layer computed the pooled features and
    logits, and the store records how many photos took that path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    classes = labels_of(list(items))
    phrases, owner = [], []
    for index, label in enumerate(classes):
        mine = class_phrases(label, synonyms.get(label, ()))
        phrases += mine
        owner += [index] * len(mine)
    listing = {
        "format": PARTITION_FORMAT,
        "features_for": features_for,
        "small_photos": outputs.small_count,
        "classes": classes,
        "items": [{"path": str(i.path), "label": i.label, "domain": i.domain} for i in items],
    }
    np.savez(directory / FEATURES_FILE, pooled=outputs.pooled.astype(np.float16),
             logits=outputs.logits.astype(np.float16))
    for name, maps in ((MAPS_FILE, outputs.maps), (MIRRORED_MAPS_FILE, outputs.mirrored_maps)):
        if maps is not None:
            np.save(directory / name, np.asarray(maps, dtype=np.float16))
        else:
            (directory / name).unlink(missing_ok=True)
    np.savez(directory / PHRASES_FILE, embeddings=np.asarray(encode_texts(phrases), dtype=np.float32),
             owner=np.asarray(owner))
    (directory / PARTITION_FILE).write_text(json.dumps(listing, indent=1) + "\n")
    return directory


def prepare_partition(directory: str | Path, data_dir: str | Path, extract: ExtractFn, encode_texts: EncodeFn,
                      features_for: str = FROZEN_FEATURES) -> Path:
    """Build a client's store from its own photo folder, on the client's machine (real deployment).

    The towers run here, once; federated rounds then only read the store.
    """
    items = scan_image_folder(data_dir)
    return write_partition(directory, items, extract(items), read_synonyms(data_dir), encode_texts, features_for)


def load_partition(directory: str | Path) -> ClientPartition:
    """Read a client's store; touches only files inside ``directory``.

    Raises:
        DatasetError: the directory is not a complete partition store.
    """
    directory = Path(directory)
    try:
        listing = json.loads((directory / PARTITION_FILE).read_text())
        if listing.get("format") != PARTITION_FORMAT:
            raise ValueError(f"format {listing.get('format')!r}, expected {PARTITION_FORMAT!r}: rebuild it with "
                             "`pmirs federated prepare`")
        features = np.load(directory / FEATURES_FILE)
        phrases = np.load(directory / PHRASES_FILE)
        pooled, logits = features["pooled"].astype(np.float32), features["logits"].astype(np.float32)
        phrase_emb, phrase_owner = phrases["embeddings"].astype(np.float32), phrases["owner"]
        maps, mirrored = (np.load(directory / name, mmap_mode="r") if (directory / name).is_file() else None
                          for name in (MAPS_FILE, MIRRORED_MAPS_FILE))
    except (OSError, ValueError, KeyError) as exc:
        raise DatasetError(f"not a federated partition store: {directory} ({exc})") from exc
    classes = list(listing["classes"])
    items = [LabelledImage(Path(i["path"]), i["label"], i.get("domain")) for i in listing["items"]]
    index = {label: k for k, label in enumerate(classes)}
    labels = np.asarray([index[i.label] for i in items])
    if any(array is not None and len(array) != len(items) for array in (pooled, logits, maps, mirrored)):
        raise DatasetError(f"partition store {directory} lists {len(items)} photos but holds features of another "
                           "number of photos")
    return ClientPartition(items, classes, labels, pooled, logits, phrase_emb, phrase_owner, maps,
                           listing.get("features_for", FROZEN_FEATURES), int(listing["small_photos"]), mirrored)


def write_partitions(
    out_root: str | Path,
    items: Sequence[LabelledImage],
    outputs: TowerOutputs,
    parts: Sequence[np.ndarray],
    synonyms: dict[str, list[str]],
    encode_texts: EncodeFn,
    features_for: str = FROZEN_FEATURES,
) -> list[Path]:
    """Write ``client-<k>`` stores under ``out_root`` from features already extracted for ``items``.

    A simulation shortcut: the features come from one shared cache instead of each client's
    machine, but each store still holds only that client's photos and features.
    """
    memo: dict[str, np.ndarray] = {}

    def encode_once(texts: Sequence[str]) -> np.ndarray:
        missing = [t for t in dict.fromkeys(texts) if t not in memo]
        if missing:
            memo.update(zip(missing, np.asarray(encode_texts(missing)), strict=True))
        return np.stack([memo[t] for t in texts])

    dirs = []
    for k, part in enumerate(parts):
        dirs.append(write_partition(Path(out_root) / client_dir_name(k), [items[i] for i in part],
                                    outputs.select(part), synonyms, encode_once, features_for))
    return dirs


def client_dir_name(partition_id: int) -> str:
    """Directory name of client ``partition_id`` under a partitions root."""
    return f"client-{int(partition_id)}"


def describe_partitions(dirs: Sequence[Path]) -> list[dict]:
    """Per-client summary (photos, classes, domains) for manifests and logs."""
    summary = []
    for directory in dirs:
        listing = json.loads((Path(directory) / PARTITION_FILE).read_text())
        domains = sorted({str(i.get("domain")) for i in listing["items"]})
        summary.append({"dir": str(directory), "photos": len(listing["items"]),
                        "classes": len(listing["classes"]), "domains": domains})
    return summary
