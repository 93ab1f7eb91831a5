"""`pmirs demo` end to end on a few photos: decrypted captions come back, sharing works, the server stops."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from middleware.datasets import photo_caption
from pmirs.cli import build_parser
from pmirs.commands import demo
from retriever.testing import free_port

pytestmark = [pytest.mark.slow, pytest.mark.service]


def test_demo_end_to_end_and_resumable(tmp_path: Path, demo_dir: Path, lite_encoder, capsys,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PMIRS_PASSPHRASE", raising=False)
    workspace = tmp_path / "demo"
    with demo.prepare_demo(workspace, encoder=lite_encoder, photos_dir=demo_dir, limit=12, progress=False) as env:
        assert len(env.photos) == 12
        assert len({p.parent.parent.name for p in env.photos}) == 4  # spread over every domain
        assert env.collections["alice"] == ["photos"]
        assert env.collections["bob"] == ["alice-photos", "bob-photos"]
        rows = demo.run_queries(env, lite_encoder)
        url = env.server_url
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=2)  # stopped when the environment closed
    indexed = {photo_caption(p.parent.name.replace("_", " ")) for p in env.photos}
    for who, query, result in rows:
        assert result.items, (who, query)
        assert all(item.caption in indexed for item in result.items)  # decrypted on the client
        assert result.rejected == 0
    by_query = {(who, query): result for who, query, result in rows}
    alice = by_query[("alice", demo.DEMO_QUERIES[0])]
    shared = by_query[("bob (shared)", demo.DEMO_QUERIES[0])]
    assert [i.id for i in shared.items] == [i.id for i in alice.items]  # bob searches alice's shared keys
    image_row = next(result for who, query, result in rows if query.startswith("[image]"))
    assert image_row.items[0].score == pytest.approx(1.0, abs=1e-3)  # the photo finds itself

    port = free_port()
    args = build_parser().parse_args(["demo", "--workspace", str(workspace), "--limit", "12", "--no-ui",
                                      "--port", str(port), "--photos", str(demo_dir)])
    assert demo.run(args, encoder=lite_encoder) == 0
    out = capsys.readouterr()
    assert "0 photos added, 12 already indexed" in out.err  # resumed: nothing uploaded twice
    assert "alice's 'shop': 24 catalogue items added" in out.err  # the customer-service catalogue
    assert demo.DEMO_PASSPHRASE in out.err
    assert "latency (ms)" in out.out and "retriever stopped" in out.out
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
