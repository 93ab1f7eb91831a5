"""PMIRS chat UI: ask about a private, encrypted collection; answers come from a local model.

Run through ``pmirs ui`` (or ``streamlit run ui/app.py -- --server URL --keystore-dir DIR``). The
encoder and the LLM are loaded once per process (``st.cache_resource``); each browser session
holds its users' opened keystores, private clients and conversations in ``st.session_state``.
"""

from __future__ import annotations

import itertools
import os
import sys

import streamlit as st

from chatbot.grounding import GroundedChat
from chatbot.llm import LLMSettings, LocalLLM
from chatbot.relevance import resolve_thresholds
from middleware.encoder import create_encoder
from middleware.encoder.base import Encoder
from pmirs.errors import PMIRSError
from ui.config import MAX_UPLOAD_MB, UIConfig, list_users, load_config
from ui.state import UserSession, describe_error, open_user_session, rows_table, visible_collections
from ui.turn import QueryImage, TurnRecord, check_upload, stream_turn
from ui.views import render_question, render_results

CONFIG_KEY = "pmirs_config"  # a test may put a UIConfig here before the first run
SESSIONS_KEY = "pmirs_sessions"  # user -> UserSession
HISTORY_KEY = "pmirs_history"  # user -> list[TurnRecord]
UPLOAD_KEY = "pmirs_upload_round"  # bumped after a turn to clear the uploader


@st.cache_resource(show_spinner="Loading the encoder…")
def get_encoder(spec: str) -> Encoder:
    """The shared encoder (read-only after loading)."""
    return create_encoder(spec)


@st.cache_resource(show_spinner="Loading the local model…")
def get_llm(model: str, n_ctx: int, n_threads: int, max_tokens: int) -> LocalLLM:
    """The shared local model; LocalLLM serialises calls from concurrent sessions itself."""
    return LocalLLM(LLMSettings(model=model, n_ctx=n_ctx, n_threads=n_threads, max_tokens=max_tokens))


def get_config() -> UIConfig | None:
    """Loaded once per browser session from the script arguments and the environment."""
    if CONFIG_KEY not in st.session_state:
        try:
            st.session_state[CONFIG_KEY] = load_config(sys.argv[1:], os.environ)
        except SystemExit:
            st.error("Start the UI with `pmirs ui --server URL --keystore-dir DIR`.")
            return None
    return st.session_state[CONFIG_KEY]


def get_user_session(config: UIConfig, user: str) -> UserSession:
    """The user's opened keystore and client, opened on first selection and kept for the session."""
    sessions: dict[str, UserSession] = st.session_state.setdefault(SESSIONS_KEY, {})
    if user not in sessions:
        path = list_users(config.keystore_dir)[user]
        sessions[user] = open_user_session(config, user, path, get_encoder(config.encoder))
    return sessions[user]


def sidebar(config: UIConfig) -> tuple[UserSession, str, QueryImage | None] | None:
    """User and collection pickers, the visibility table and the image upload."""
    st.sidebar.header("Private search")
    users = list_users(config.keystore_dir)
    if not users:
        st.sidebar.warning(f"No keystores in {config.keystore_dir}.")
        return None
    user = st.sidebar.selectbox("User", list(users), help="one keystore per user in the keystore folder")
    try:
        session = get_user_session(config, user)
        rows = visible_collections(session)
    except PMIRSError as e:
        st.sidebar.error(describe_error(e))
        return None
    st.sidebar.dataframe(rows_table(rows), hide_index=True, width="stretch")
    st.sidebar.caption(f"The server lists only {user}'s tenant, by opaque names. Their keystore names and "
                       "decrypts the collections they own or were shared; the rest stay opaque hashes "
                       "(keys: none) and cannot be searched.")
    searchable = [r.name for r in rows if r.searchable]
    if not searchable:
        st.sidebar.info(f"{user} has no searchable collection on this server yet.")
        return None
    collection = st.sidebar.selectbox("Collection", searchable)
    image = upload_box()
    if st.sidebar.button("New conversation"):
        st.session_state.setdefault(HISTORY_KEY, {})[user] = []
        for assistant in session.assistants.values():
            assistant.reset()
    st.sidebar.caption(f"Retriever {config.server_url} · local model {config.model}")
    return session, collection, image


def upload_box() -> QueryImage | None:
    """An optional query picture, checked before use (errors are shown, never raised)."""
    round_ = st.session_state.setdefault(UPLOAD_KEY, 0)
    upload = st.sidebar.file_uploader("Search by picture (JPEG or PNG)", type=["jpg", "jpeg", "png"],
                                      max_upload_size=MAX_UPLOAD_MB, key=f"upload-{round_}")
    if upload is None:
        return None
    try:
        image = check_upload(upload.name, upload.getvalue(), MAX_UPLOAD_MB * 2**20)
    except PMIRSError as e:
        st.sidebar.error(describe_error(e))
        return None
    st.sidebar.image(image.data, caption="your next question searches by this picture", width=120)
    return image


def ask(config: UIConfig, session: UserSession, collection: str, question: str,
        image: QueryImage | None) -> TurnRecord:
    """Draw one new turn while it runs: search, stream the answer, then sources and inspector."""
    record = TurnRecord(question=question, collection=collection, query_image=image)
    render_question(record)
    with st.chat_message("assistant"):
        try:
            limits = resolve_thresholds(session.client, config.threshold, None)
            chat = GroundedChat(get_llm(config.model, config.n_ctx, config.n_threads, config.max_tokens),
                                threshold=limits.image, text_threshold=limits.text)
            parts = stream_turn(session, session.assistant(collection, chat, config.k), record, suite=config.suite)
            with st.spinner("Searching privately…"):
                first = next(parts, "")  # the private search, then the model's first token
            st.write_stream(itertools.chain([first], parts))
        except PMIRSError as e:
            record.error = describe_error(e)
        render_results(record)
    return record


def main() -> None:
    """The page: sidebar, the conversation so far, and the chat input."""
    st.set_page_config(page_title="PMIRS private chat", layout="wide")
    st.title("PMIRS private chat")
    st.caption("Your question and pictures are embedded, obfuscated and encrypted on this machine; the "
               "search server sees only ciphertexts and rotated vectors. Answers come from a local model.")
    config = get_config()
    if config is None:
        return
    picked = sidebar(config)
    if picked is None:
        st.chat_input("Pick a user and a collection first", disabled=True)
        return
    session, collection, image = picked
    history: list[TurnRecord] = st.session_state.setdefault(HISTORY_KEY, {}).setdefault(session.user, [])
    for record in history:
        render_question(record)
        with st.chat_message("assistant"):
            st.markdown(record.answer)
            render_results(record)
    placeholder = "Ask about this picture…" if image else f"Ask about {collection}…"
    question = st.chat_input(placeholder)
    if question:
        history.append(ask(config, session, collection, question, image))
        if image is not None:
            st.session_state[UPLOAD_KEY] += 1
            st.rerun()


if __name__ == "__main__":  # Streamlit runs this file as __main__; importing it (tests) draws nothing
    main()
