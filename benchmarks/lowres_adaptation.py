"""`pmirs bench lowres-adaptation`: does adapting the tower's last layer to small photos help unseen classes?

ConSE is bounded by the frozen tower's classifier, which recognises upsampled 64-px photos poorly
(see ``input-size``). This experiment tunes a copy of the tower's last conv layer with the
tower's own ImageNet labels on most pretrain classes, with a distillation term toward the frozen
tower's outputs (learning without forgetting) so the other 1000-way predictions keep their
shape. It scores the tower's top-1/top-5 on held-out pretrain classes after every epoch and,
with the epoch those pick, the zero-shot paper-protocol F1 and mAP on the benchmark split with
ConSE reading the adapted layer. Nothing of the benchmark split is trained on. An experiment for
the next base heads, not a shipped path yet.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from benchmarks.input_size import imagenet_index
from middleware.datasets import PHRASE_IMAGENET

DEMO_DIR = Path(__file__).resolve().parents[1] / "data" / "demo"  # full-resolution photos, long side 400 px


def _top(logits: torch.Tensor, targets: np.ndarray) -> dict[str, float]:
    top5 = logits.topk(5, dim=1).indices.numpy()
    return {"top1": round(float((top5[:, 0] == targets).mean()), 4),
            "top5": round(float((top5 == targets[:, None]).any(axis=1).mean()), 4)}


def adapt_tower_head(maps: np.ndarray, targets: np.ndarray, train: np.ndarray, heldout: np.ndarray, tower,
                     epochs: int = 4, lr: float = 1e-4, distill: float = 1.0, batch_size: int = 128,
                     seed: int = 0) -> tuple[dict, list[dict]]:
    """Train a tower-head copy on ``train`` rows; returns the best state (by held-out top-1) and the curve."""
    from middleware.encoder.heads import TowerHead

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    head = TowerHead()
    head.copy_from_tower(tower.model)
    classifier = tower.model._fc
    x = torch.from_numpy(np.asarray(maps, dtype=np.float32))
    y = torch.from_numpy(targets)
    with torch.no_grad():
        frozen = classifier(head(x))
    curve = [{"epoch": 0, "train": _top(frozen[train], targets[train]),
              "heldout": _top(frozen[heldout], targets[heldout])}]
    best = (curve[0]["heldout"]["top1"], {k: v.clone() for k, v in head.state_dict().items()})
    optimiser = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.0)
    head.train()
    for epoch in range(1, epochs + 1):
        order = rng.permutation(train)
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            logits = classifier(head(x[idx]))
            loss = F.cross_entropy(logits, y[idx]) + distill * F.kl_div(
                F.log_softmax(logits, dim=1), F.softmax(frozen[idx], dim=1), reduction="batchmean")
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        with torch.no_grad():
            logits = classifier(head(x))
        curve.append({"epoch": epoch, "train": _top(logits[train], targets[train]),
                      "heldout": _top(logits[heldout], targets[heldout])})
        print(f"  epoch {epoch}: held-out top-1 {curve[-1]['heldout']['top1']:.3f}", flush=True)
        if curve[-1]["heldout"]["top1"] > best[0]:
            best = (curve[-1]["heldout"]["top1"], {k: v.clone() for k, v in head.state_dict().items()})
    return best[1], curve


def run_lowres_adaptation(data_root: str | Path, out: str | Path, per_class: int = 60, epochs: int = 4,
                          holdout_every: int = 4, feature_cache: str | Path = "cache/features",
                          demo_dir: Path = DEMO_DIR) -> dict:
    """Adapt on ``pretrain/`` (every ``holdout_every``-th class held out), score zero-shot on ``val/``,
    and check full-resolution photos (the demo collection)."""
    from benchmarks.quality import evaluate_domain
    from middleware.datasets import limit_per_class, scan_image_folder
    from middleware.encoder.conse import conse_embed
    from middleware.encoder.features import tower_outputs
    from middleware.encoder.heads import BASE_HEADS_PATH, TowerHead
    from middleware.encoder.lite import LiteEncoder

    data_root = Path(data_root)
    encoder = LiteEncoder(BASE_HEADS_PATH)
    tower, cfg = encoder.image_tower, encoder.config
    items = limit_per_class(scan_image_folder(data_root / "pretrain"), per_class)
    index = imagenet_index(items, data_root)
    items = [i for i in items if i.label in index]
    classes = sorted({i.label for i in items})
    heldout_classes = set(classes[holdout_every - 1 :: holdout_every])
    pretrain = tower_outputs(items, tower, feature_cache, with_maps=True, desc="features pretrain")
    targets = np.asarray([index[i.label] for i in items])
    is_heldout = np.asarray([i.label in heldout_classes for i in items])
    state, curve = adapt_tower_head(pretrain.maps, targets, np.flatnonzero(~is_heldout), np.flatnonzero(is_heldout),
                                    tower, epochs=epochs)
    head = TowerHead()
    head.load_state_dict(state)
    head.eval()
    results: dict = {"pretrain_photos": len(items), "heldout_classes": sorted(heldout_classes), "curve": curve,
                     "best_epoch": max(curve, key=lambda r: r["heldout"]["top1"])["epoch"], "zero_shot": {}}
    val_items = scan_image_folder(data_root / "val")
    val = tower_outputs(val_items, tower, feature_cache, with_maps=True, desc="features val")
    with torch.no_grad():
        adapted = tower.model._fc(head(torch.from_numpy(np.asarray(val.maps, dtype=np.float32)))).numpy()

    def encode_texts(texts):
        return encoder.embed_text_features(encoder.text_tower.encode(list(texts)))

    for name, logits in (("frozen", val.logits), ("adapted", adapted)):
        conse = conse_embed(logits, encoder.class_bank, cfg.conse_top_k, cfg.conse_temperature).astype(np.float32)
        with torch.no_grad():
            emb = encoder.heads.encode_image(torch.from_numpy(conse), torch.from_numpy(val.pooled)).numpy()
        scores = {}
        for domain in dict.fromkeys(i.domain for i in val_items):
            rows = np.flatnonzero([i.domain == domain for i in val_items])
            paper, retrieval = evaluate_domain(emb[rows], [val_items[r].label for r in rows], encode_texts, (5, 10))
            scores[domain] = {"f1@5": round(paper["5"]["f1"], 4), "f1@10": round(paper["10"]["f1"], 4),
                              "t2i_map": round(retrieval["t2i_map"], 4)}
        scores["mean"] = {k: round(float(np.mean([s[k] for s in scores.values()])), 4)
                          for k in ("f1@5", "f1@10", "t2i_map")}
        results["zero_shot"][name] = scores
        print(f"  {name}: mean {scores['mean']}", flush=True)
    trained = frozenset(classes) - heldout_classes
    results["full_resolution"] = full_resolution_check(head, tower, demo_dir, trained)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    return results


def full_resolution_check(head, tower, photo_root: Path, trained_classes: frozenset[str] = frozenset()) -> dict:
    """Tower top-1/top-5 on full-resolution photos (labels naming ImageNet classes), frozen vs adapted,
    for all of them and for those of classes the adaptation did not train on: an adaptation to
    thumbnails must not cost sharp photos."""
    from middleware.datasets import open_image, scan_image_folder
    from middleware.encoder.preprocess import images_to_array

    items = scan_image_folder(photo_root)
    index = imagenet_index(items, photo_root)
    items = [i for i in items if i.label in index]
    targets = np.asarray([index[i.label] for i in items])
    maps = np.concatenate([tower.prehead_maps(images_to_array([open_image(i.path) for i in items[s : s + 32]]))
                           for s in range(0, len(items), 32)])
    with torch.no_grad():
        adapted = tower.model._fc(head(torch.from_numpy(maps)))
    frozen = torch.from_numpy(tower.logits_from_pooled(tower.pooled_from_maps(maps)))
    unseen = np.asarray([i.label not in trained_classes for i in items])
    result = {"photos": len(items), "frozen": _top(frozen, targets), "adapted": _top(adapted, targets),
              "unseen_photos": int(unseen.sum()), "unseen_frozen": _top(frozen[unseen], targets[unseen]),
              "unseen_adapted": _top(adapted[unseen], targets[unseen])}
    print(f"  full-resolution photos ({len(items)}): frozen {result['frozen']}, adapted {result['adapted']}; "
          f"of untrained classes ({result['unseen_photos']}): frozen {result['unseen_frozen']}, "
          f"adapted {result['unseen_adapted']}", flush=True)
    return result


def register_bench(sub: argparse._SubParsersAction) -> None:
    """Add ``pmirs bench lowres-adaptation``."""
    parser = sub.add_parser("lowres-adaptation", help="experiment: tower's last layer adapted to small photos")
    parser.add_argument("--data", default=str(PHRASE_IMAGENET), help="phrase-imagenet root")
    parser.add_argument("--per-class", type=int, default=60, help="pretrain photos per class")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--feature-cache", default="cache/features", help="cached tower outputs")
    parser.add_argument("--out", default="lowres_adaptation.json", help="results JSON")
    parser.set_defaults(func=_main)


def _main(args: argparse.Namespace) -> int:
    run_lowres_adaptation(args.data, args.out, args.per_class, args.epochs, feature_cache=args.feature_cache)
    return 0
