"""The LangChain wrapper in an LCEL chain, end to end with the real small model."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from chatbot.chat_model import LocalChatModel, to_chat_messages
from chatbot.llm import LocalLLM

PROMPT = ChatPromptTemplate.from_messages(
    [("system", "Answer from this note only: {note}"), ("human", "{question}")]
)


def test_messages_map_to_chat_roles() -> None:
    msgs = [SystemMessage("rules"), HumanMessage("hi"), AIMessage("hello")]
    assert to_chat_messages(msgs) == [
        {"role": "system", "content": "rules"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]


@pytest.mark.slow
def test_lcel_chain_invoke_and_stream(small_llm: LocalLLM) -> None:
    model = LocalChatModel(llm=small_llm, max_tokens=24)
    chain = PROMPT | model | StrOutputParser()
    inputs = {"note": "The store's return window is 30 days.", "question": "How long is the return window?"}
    answer = chain.invoke(inputs)
    assert isinstance(answer, str) and "30" in answer
    pieces = list(chain.stream(inputs))
    assert len(pieces) > 1 and all(isinstance(p, str) for p in pieces)
    assert "".join(pieces).strip() == answer.strip()  # greedy decoding: the same answer either way


@pytest.mark.slow
def test_chat_model_stream_yields_message_chunks(small_llm: LocalLLM) -> None:
    model = LocalChatModel(llm=small_llm, max_tokens=8)
    chunks = list(model.stream([HumanMessage("Say hello.")]))
    assert chunks and all(isinstance(c, AIMessageChunk) for c in chunks)
    assert model._llm_type == "pmirs-llama-cpp"
