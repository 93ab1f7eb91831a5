"""A LangChain chat model over :class:`chatbot.llm.LocalLLM`, for LCEL chains.

Example:
    >>> from langchain_core.output_parsers import StrOutputParser
    >>> from langchain_core.prompts import ChatPromptTemplate
    >>> from chatbot.llm import LLMSettings, LocalLLM
    >>> model = LocalChatModel(llm=LocalLLM(LLMSettings(model="smollm2-135m", n_ctx=2048, max_tokens=32)))
    >>> prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{question}")])
    >>> chain = prompt | model | StrOutputParser()
    >>> chain.invoke({"question": "What colour is the sky?"})
    'The sky is blue.'
    >>> for piece in chain.stream({"question": "What colour is grass?"}):
    ...     print(piece, end="")
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import ConfigDict, Field

from chatbot.llm import LocalLLM

_ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool", "function": "tool"}


def to_chat_messages(messages: list[BaseMessage]) -> list[dict[str, str]]:
    """LangChain messages as the ``{"role", "content"}`` dicts llama.cpp's chat template expects."""
    out: list[dict[str, str]] = []
    for m in messages:
        role = _ROLES.get(m.type, "user")
        if m.type == "chat":  # ChatMessage carries its own role
            role = str(getattr(m, "role", "user"))
        out.append({"role": role, "content": m.text})
    return out


class LocalChatModel(BaseChatModel):
    """LangChain ``BaseChatModel`` for the local llama.cpp model: ``invoke``, ``stream``, LCEL.

    The wrapped :class:`LocalLLM` holds the weights; several chat models may share one. Sampling
    settings come from the LocalLLM; ``max_tokens`` here overrides its answer length.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    llm: LocalLLM = Field(exclude=True)  # the loaded model
    max_tokens: int | None = None  # None: the LocalLLM's settings.max_tokens

    @property
    def _llm_type(self) -> str:
        return "pmirs-llama-cpp"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        s = self.llm.settings
        return {
            "model": self.llm.model_name,
            "n_ctx": s.n_ctx,
            "temperature": s.temperature,
            "max_tokens": self.max_tokens or s.max_tokens,
            "repeat_penalty": s.repeat_penalty,
            "seed": s.seed,
        }

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = self.llm.chat(to_chat_messages(messages), max_tokens=self.max_tokens, stop=stop)
        message = AIMessage(content=text, response_metadata={"model_name": self.llm.model_name})
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        # BaseChatModel.stream() reports each chunk to run_manager itself; doing it here too
        # would send every token to callbacks twice.
        for piece in self.llm.stream(to_chat_messages(messages), max_tokens=self.max_tokens, stop=stop):
            yield ChatGenerationChunk(message=AIMessageChunk(content=piece))
