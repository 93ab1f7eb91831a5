"""Helpers for the UI tests: the passphrase, the demo photos to index, users and the app's config."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from chatbot.model_files import SMALL_MODEL
from middleware.keystore import Keystore
from retriever.testing import ServiceProcess, register_user
from ui.config import UIConfig

PASSPHRASE = "ui test passphrase"
PHOTOS = ("mammals/tabby", "mammals/golden_retriever", "vehicles/school_bus", "vehicles/sports_car",
          "food/pizza", "food/banana")

for _key, _value in {"ANONYMIZED_TELEMETRY": "False", "HF_HUB_OFFLINE": "1",
                     "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "STREAMLIT_SERVER_HEADLESS": "true"}.items():
    os.environ.setdefault(_key, _value)


@dataclass(frozen=True)
class UIEnv:
    """What the UI tests point the app at."""

    service: ServiceProcess
    keystore_dir: Path

    def config(self, **overrides: object) -> UIConfig:
        """A config for the small model and short answers (tests run on 2 shared cores)."""
        settings = {"server_url": self.service.url, "keystore_dir": self.keystore_dir,
                    "passphrases": {"": PASSPHRASE}, "model": SMALL_MODEL, "max_tokens": 32, "n_ctx": 2048,
                    "n_threads": 1, "k": 4}
        settings.update(overrides)
        return UIConfig(**settings)  # type: ignore[arg-type]


def make_user(service: ServiceProcess, keystore_dir: Path, user: str, tenant: str) -> Keystore:
    """A keystore ``<user>.keys`` (fast scrypt) registered with the service in ``tenant`` and pinned to it."""
    keystore = Keystore.create(keystore_dir / f"{user}.keys", PASSPHRASE, user, scrypt_n=2**10)
    register_user(service.data_dir, user, keystore.identity_public_key.hex(), tenant)
    keystore.pin_server(service.url, service.fingerprint)
    return keystore
