"""The service against a separate Chroma server (``chroma run``) through chromadb.HttpClient."""

from __future__ import annotations

import numpy as np
import pytest
from retriever_helpers import RawClient, vec

from pmirs.protocol.encoding import b64url_encode
from retriever.testing import ChromaProcess, ServiceProcess

pytestmark = pytest.mark.service


def test_service_with_remote_chroma(tmp_path, make_user, raw_clients) -> None:
    with ChromaProcess(tmp_path / "chroma") as chroma:
        service = ServiceProcess(tmp_path / "data", chroma_host="127.0.0.1", chroma_port=chroma.port)
        try:
            service.start()
            user_id, key = make_user(service.data_dir, "alice", "acme")
            alice = RawClient(service.url, user_id, key, service.fingerprint)
            raw_clients.append(alice)
            assert alice.handshake().status_code == 200
            assert alice.call("/collections/create", {"name": "remote", "dim": 4, "key_version": 1})[0] == 200
            batch = [{"id": f"i{j}", "vector": vec(np.eye(4)[j]), "ciphertext": b64url_encode(b"x" * 20)}
                     for j in range(4)]
            added = alice.call("/items/add", {"collection": "remote", "key_version": 1, "items": batch})
            assert added == (200, {"added": 4})
            service.restart()  # sessions are gone, the data are in the Chroma server
            assert alice.handshake().status_code == 200
            status, body = alice.call("/query", {"collection": "remote", "k": 1, "key_version": 1,
                                                 "vector": vec([0, 0, 1, 0])})
            assert status == 200 and [r["id"] for r in body["results"]] == ["i2"]
            assert not list((tmp_path / "data").glob("chroma"))  # nothing stored locally
        finally:
            service.stop()
