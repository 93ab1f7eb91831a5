"""Ship a federated run's checkpoint, once calibrated, where the middleware loads it from.

After training, each calibration (``pmirs bench mixed-kinds|mirror-average|relevance --write-to``)
saves a copy whose config changes and whose weights do not. Shipping checks exactly that against
the run's own checkpoint, copies the file under its hash and writes the manifest beside it: the
run's manifest, the values calibrated since, the commands, and what the model was trained on. It
does not switch the default: that stays a reviewed one-line change (``heads.FEDERATED_HEADS_PATH``).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from federated.json_files import read_json
from middleware.encoder.heads import WEIGHTS_DIR, HeadsCheckpoint, load_heads
from pmirs.errors import FederatedError


def same_weights(a: HeadsCheckpoint, b: HeadsCheckpoint) -> bool:
    """True when two checkpoints hold identical weights and class bank (their configs may differ)."""
    if list(a.state_dict) != list(b.state_dict) or not np.array_equal(a.class_bank, b.class_bank):
        return False
    return all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def calibration_record(path: Path) -> dict:
    """Which calibration result a shipped file relied on, and the photos it was chosen on (if it says)."""
    result = read_json(path, "calibration result")
    record = {"file": path.name}
    if "chosen_on" in result:
        record["chosen_on"] = result["chosen_on"]
    return record


def ship_checkpoint(calibrated: str | Path, run_checkpoint: str | Path, command: str,
                    calibrations: Sequence[str | Path] = (), trained_on: str = "",
                    weights_dir: str | Path = WEIGHTS_DIR) -> Path:
    """Copy ``calibrated`` into ``weights_dir`` as ``fed-heads-<version>.pt`` with its manifest; returns its path.

    Everything is read and checked before anything is written, so a refused ship leaves ``weights_dir`` as it was.

    Raises:
        FederatedError: the run's manifest or a calibration result is missing or unreadable, or ``calibrated``
            holds other weights than the run's checkpoint (only calibrations, which change the config, may lie
            between the two).
    """
    calibrated, run_checkpoint, weights_dir = Path(calibrated), Path(run_checkpoint), Path(weights_dir)
    run_manifest_path = run_checkpoint.with_suffix(".json")
    if not run_manifest_path.is_file():
        raise FederatedError(f"no run manifest beside {run_checkpoint} (expected {run_manifest_path})")
    run_manifest = read_json(run_manifest_path, "run manifest")
    records = [calibration_record(Path(p)) for p in calibrations]
    shipped, trained = load_heads(calibrated), load_heads(run_checkpoint)
    if not same_weights(shipped, trained):
        raise FederatedError(f"{calibrated} holds other weights than the run's checkpoint {run_checkpoint}: "
                             "ship a calibrated copy of that run's checkpoint")
    config = shipped.config
    weights_dir.mkdir(parents=True, exist_ok=True)
    dest = weights_dir / f"fed-heads-{shipped.version}.pt"
    staging = dest.with_suffix(".pt.staging")
    shutil.copyfile(calibrated, staging)
    staging.replace(dest)
    manifest = {
        **run_manifest,
        "checkpoint": dest.name,
        "version": shipped.version,
        "trained_version": trained.version,
        "trained_on": trained_on or config.extra.get("trained_on", "unknown"),
        "command": command,
        "relevance": config.extra.get("relevance"),
        "tuned_offset": config.tuned_offset,
        "mirror_average": config.mirror_average,
        "calibrations": records,
    }
    dest.with_suffix(".json").write_text(json.dumps(manifest, indent=2, default=float) + "\n")
    return dest
