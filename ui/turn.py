"""One chat turn as the UI shows it: :class:`chatbot.assistant.Assistant` does the work (condense,
private search, grounded streamed answer, memory); this module checks uploads and keeps what the
page redraws: the decrypted items, the timings and the privacy inspection.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass, field

from PIL import Image

from chatbot.assistant import IMAGE_QUESTION, Assistant, AssistantReply, CitedItem
from pmirs.errors import UploadRejectedError
from ui.inspector import Inspection, inspect_query
from ui.state import UserSession

ALLOWED_FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}


@dataclass(frozen=True)
class QueryImage:
    """A validated upload: its name (shown) and bytes (encoded locally, never sent)."""

    name: str
    data: bytes


@dataclass
class TurnRecord:
    """Everything the UI shows for one question (kept in the session to redraw the history)."""

    question: str
    collection: str
    retrieval_query: str = ""
    query_image: QueryImage | None = None
    items: list[CitedItem] = field(default_factory=list)  # everything retrieved, best first
    answer: str = ""
    cited_ids: list[str] = field(default_factory=list)
    cited_inferred: bool = False
    used_llm: bool = False
    timings_ms: dict[str, float] = field(default_factory=dict)
    inspection: Inspection | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        self.question = self.question.strip() or IMAGE_QUESTION


def check_upload(name: str, data: bytes, max_bytes: int) -> QueryImage:
    """Refuse anything but a readable JPEG/PNG of at most ``max_bytes`` (before it is decoded fully).

    Raises:
        UploadRejectedError: too large, not an image, another format, or a decompression bomb.
    """
    if len(data) > max_bytes:
        raise UploadRejectedError(f"{name} is {len(data) / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format
            probe.verify()
    except Exception as e:  # PIL raises many types (incl. DecompressionBombError) for hostile input
        raise UploadRejectedError(f"{name} is not a readable image") from e
    if fmt not in ALLOWED_FORMATS:
        raise UploadRejectedError(f"{name} is a {fmt} image; upload a JPEG or PNG")
    return QueryImage(name, data)


def stream_turn(session: UserSession, assistant: Assistant, record: TurnRecord, *, suite: str) -> Iterator[str]:
    """Yield the answer as the local model writes it; fill in the record (items, timings, inspection) at the end.

    The first piece arrives only after the private search (and the model's prompt processing).
    """
    session.recorder.start()
    session.encoder.last = None
    image = record.query_image.data if record.query_image else None
    reply: AssistantReply | None = None
    for part in assistant.stream(record.question, image):
        if isinstance(part, AssistantReply):
            reply = part
        else:
            yield part
    if reply is None:
        raise RuntimeError("the assistant ended without a reply")
    record.items = list(reply.retrieved)
    record.answer = reply.answer
    record.cited_ids = [it.id for it in reply.items]
    record.cited_inferred = reply.cited_inferred
    record.used_llm = reply.used_llm
    record.retrieval_query = f"[image: {record.query_image.name}]" if record.query_image else reply.query
    record.timings_ms = dict(reply.timings_ms)
    if session.encoder.last is not None:
        record.inspection = inspect_query(
            codec=session.codec, collection=record.collection, embedding=session.encoder.last,
            calls=session.recorder.calls, items=record.items, k=assistant.k, suite=suite,
            question=record.question, retrieval_query=record.retrieval_query,
            query_image=record.query_image.name if record.query_image else None)
