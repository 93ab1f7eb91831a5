"""The README's LangChain example, run verbatim against a real retriever service.

``README_SNIPPET`` must stay identical to the README's code block; the test supplies what a user
has: the environment variables, a keystore pinned to the server, an indexed collection "photos",
and a photo ``dog.jpg`` in the working directory.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from chat_harness import PASSPHRASE, demo_photo, make_keystore

import middleware.encoder
from middleware.client import PrivacyMiddleware
from retriever.testing import ServiceProcess

pytestmark = [pytest.mark.slow, pytest.mark.service]

README_SNIPPET = '''\
import os

from chatbot.langchain_retriever import PMIRSRetriever, image_query

retriever = PMIRSRetriever.from_keystore(
    os.environ["PMIRS_SERVER"],  # the retriever, e.g. http://127.0.0.1:8400 (fingerprint pinned)
    os.environ["PMIRS_KEYSTORE"],  # your keystore file (pmirs keys init)
    os.environ["PMIRS_PASSPHRASE"],
    collection="photos",
    k=4,
)
for doc in retriever.invoke("a dog playing on the beach"):  # the server never sees the query
    print(f"{doc.metadata['score']:.2f} {doc.metadata['kind']:5} {doc.page_content}")
same = retriever.invoke(image_query("dog.jpg"))  # search by photo; images come back as data: URLs
print(same[0].page_content, round(same[0].metadata["score"], 2), same[0].metadata["image_url"][:15])
retriever.close()
'''
PHOTOS = ("golden_retriever", "Labrador_retriever", "seashore", "pizza", "koala")
DOG_OR_BEACH = {"a photo of a golden retriever", "a photo of a Labrador retriever", "a photo of a seashore"}


def test_readme_snippet_runs_against_a_live_service(tmp_path: Path, lite_encoder: Any,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    with ServiceProcess(tmp_path / "data") as service:
        keystore = make_keystore(tmp_path, "alice", service)
        with PrivacyMiddleware(service.url, keystore, lite_encoder) as pm:
            pm.create_collection("photos")
            pm.index_images("photos", [(demo_photo(p), f"a photo of a {p.replace('_', ' ')}") for p in PHOTOS])
        monkeypatch.setenv("PMIRS_SERVER", service.url)
        monkeypatch.setenv("PMIRS_KEYSTORE", str(keystore.path))
        monkeypatch.setenv("PMIRS_PASSPHRASE", PASSPHRASE)
        monkeypatch.setattr(middleware.encoder, "create_encoder", lambda spec: lite_encoder)  # already loaded
        shutil.copy(demo_photo("golden_retriever"), tmp_path / "dog.jpg")
        monkeypatch.chdir(tmp_path)
        exec(compile(README_SNIPPET, "README.md", "exec"), {"__name__": "readme_example"})
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 5  # k=4 text results, then the photo search
    scores = [float(line.split()[0]) for line in lines[:4]]
    assert scores == sorted(scores, reverse=True)
    captions = [line.split(maxsplit=2)[2] for line in lines[:4]]
    assert set(captions[:3]) == DOG_OR_BEACH and lines[0].split()[1] == "image"  # dogs and the beach first
    assert lines[4] == "a photo of a golden retriever 1.0 data:image/jpeg"
