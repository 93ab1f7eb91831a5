"""A real retriever with two users' keystores and a few privately indexed demo photos, for the UI tests.

alice owns ``photos`` (six demo pictures) and bob owns ``notes`` (two texts), in the same tenant:
the server lists both collections to each of them, but each can name and search only their own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ui_harness import PHOTOS, UIEnv, make_user

from middleware.client import PrivacyMiddleware
from retriever.testing import ServiceProcess


@pytest.fixture(scope="session")
def ui_env(tmp_path_factory: pytest.TempPathFactory, lite_encoder, demo_dir: Path) -> Iterator[UIEnv]:
    """Started once for all UI tests and stopped at the end of the session."""
    root = tmp_path_factory.mktemp("ui")
    keystore_dir = root / "keystores"
    keystore_dir.mkdir()
    with ServiceProcess(root / "service") as service:
        alice = make_user(service, keystore_dir, "alice", "home")
        bob = make_user(service, keystore_dir, "bob", "home")
        with PrivacyMiddleware(service.url, alice, lite_encoder) as client:
            client.create_collection("photos")
            client.index_images("photos", [(demo_dir / f"{p}/{p.split('/')[1]}.jpg",
                                            f"a photo of a {p.split('/')[1].replace('_', ' ')}")
                                           for p in PHOTOS])
        with PrivacyMiddleware(service.url, bob, lite_encoder) as client:
            client.create_collection("notes")
            client.index_texts("notes", ["Bob's bike lock code is 4321.", "Bob's dentist is on Friday."])
        yield UIEnv(service, keystore_dir)
