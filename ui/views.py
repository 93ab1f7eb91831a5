"""How a turn is drawn: answer, gallery of decrypted results, privacy inspector and latency.

Used both right after a turn and when Streamlit redraws the history on every rerun.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import streamlit as st
from PIL import Image, ImageOps

from ui.inspector import Inspection
from ui.turn import TurnRecord

INSPECTOR_LABEL = "Privacy inspector: what the server saw"
LATENCY_LABEL = "Latency per stage"
GALLERY_COLUMNS = 4
THUMBNAIL = (320, 240)  # every picture is cropped to this, so the gallery rows line up
# Display order and labels of the per-stage timings (ms).
STAGES = {
    "retrieval_encode": "encode (local)",
    "retrieval_obfuscate": "obfuscate (local)",
    "retrieval_encrypt": "encrypt (local)",
    "retrieval_http": "HTTP round trip",
    "retrieval_server_search": "server search (within HTTP)",
    "retrieval_decrypt": "decrypt (local)",
    "retrieval_total": "retrieval total",
    "ttft": "LLM first token",
    "llm_total": "LLM answer",
    "total": "turn total",
}


def render_question(record: TurnRecord) -> None:
    """The user's message (with the query image, which is encoded locally and never sent)."""
    with st.chat_message("user"):
        st.markdown(record.question)
        if record.query_image is not None:
            st.image(record.query_image.data, caption=f"query image: {record.query_image.name}", width=160)


def render_results(record: TurnRecord) -> None:
    """Everything under the answer text: sources gallery, inspector, latency."""
    if record.error:
        st.error(record.error)
        return
    if record.cited_ids:
        label = "likely source" if record.cited_inferred else "cited"
        st.caption(f"{label}: " + ", ".join(_title(record, i) for i in record.cited_ids))
    render_gallery(record)
    if record.inspection is not None:
        render_inspector(record.inspection)
    if record.timings_ms:
        render_latency(record.timings_ms)


def render_gallery(record: TurnRecord) -> None:
    """The retrieved pictures (decrypted on this machine) with their scores; texts as a list."""
    images = [it for it in record.items if it.kind == "image" and it.image_bytes]
    texts = [it for it in record.items if it.kind != "image"]
    if not record.items:
        st.caption("No results in this collection.")
        return
    st.markdown(f"**Retrieved from `{record.collection}`** (decrypted locally)")
    for start in range(0, len(images), GALLERY_COLUMNS):
        columns = st.columns(GALLERY_COLUMNS)
        for column, item in zip(columns, images[start:start + GALLERY_COLUMNS], strict=False):
            mark = " ★" if item.id in record.cited_ids else ""
            column.image(thumbnail(item.image_bytes), caption=f"{item.caption or 'untitled'} · {item.score:.2f}{mark}",
                         width="stretch")
    for item in texts:
        st.markdown(f"- {item.text or item.caption} · `{item.score:.2f}`")


def render_inspector(ins: Inspection) -> None:
    """Two columns: the server's view of the query next to what never left this machine."""
    with st.expander(INSPECTOR_LABEL):
        seen, local = st.columns(2)
        call = ins.query_call
        with seen:
            st.markdown("**Server saw**")
            lines = [
                f"- suite `{ins.suite}`, session `{ins.session_prefix}`"
                + (f" (message #{call.seq})" if call and call.seq is not None else ""),
                f"- collection `{ins.wire_collection[:16]}…` (keyed hash), key version {ins.key_version}",
                f"- obfuscated query vector ({ins.dim} dims, sent sealed): `{_vector(ins.obfuscated_preview)}`",
            ]
            if call is not None:
                lines.append(f"- sealed request {call.request_bytes:,} B (ciphertext {call.ciphertext_bytes or 0:,} B)"
                             f", sealed response {call.response_bytes or 0:,} B")
            if ins.handshake:
                lines.append("- a new session handshake (signed user identity) before this query")
            lines.append(f"- top-{ins.k}: keyed item ids and the scores it computed: "
                         + ", ".join(f"`{i[:8]}…` {s:.2f}" for i, s in zip(ins.result_ids, ins.result_scores,
                                                                          strict=False)))
            st.markdown("\n".join(lines))
        with local:
            st.markdown("**Stayed on this machine**")
            lines = [f"- question: “{ins.question}”"]
            if ins.query_image:
                lines.append(f"- query image `{ins.query_image}` (pixels never sent)")
            elif ins.retrieval_query != ins.question:
                lines.append(f"- retrieval query (with memory): “{ins.retrieval_query}”")
            lines += [
                f"- plaintext embedding: `{_vector(ins.plain_preview)}`",
                f"- cosine(plaintext, obfuscated) = {ins.cosine_plain_vs_obfuscated:.3f}; norms "
                f"{ins.norms[0]:.3f} = {ins.norms[1]:.3f} (a secret rotation: ranking kept, coordinates hidden)",
                "- decrypted captions: " + ("; ".join(f"“{c}”" for c in ins.captions) or "none"),
            ]
            st.markdown("\n".join(lines))


def render_latency(timings_ms: dict[str, float]) -> None:
    """Per-stage milliseconds as a small table with bars."""
    rows = [{"stage": label, "ms": round(float(timings_ms[key]), 1)}
            for key, label in STAGES.items() if key in timings_ms]
    with st.expander(LATENCY_LABEL):
        top = max((r["ms"] for r in rows), default=1.0) or 1.0
        st.dataframe(rows, hide_index=True, width="stretch", column_config={
            "ms": st.column_config.ProgressColumn("ms", format="%.1f", min_value=0.0, max_value=top)})


def thumbnail(data: bytes) -> Image.Image:
    """A centred crop of the decrypted picture at :data:`THUMBNAIL` size (done locally, in memory)."""
    with Image.open(io.BytesIO(data)) as image:
        return ImageOps.fit(image.convert("RGB"), THUMBNAIL)


def _vector(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:+.3f}" for v in values) + ", …]"


def _title(record: TurnRecord, item_id: str) -> str:
    item = next((it for it in record.items if it.id == item_id), None)
    return (item.caption or item.text or item_id[:8]) if item else item_id[:8]
