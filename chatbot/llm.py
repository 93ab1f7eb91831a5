"""The local LLM on the trusted side: a GGUF model run by llama.cpp (llama-cpp-python), offline.

The model's own chat template (stored in the GGUF) formats the messages, so any instruct GGUF
works without a per-model prompt format here.

Example:
    >>> llm = LocalLLM(LLMSettings(model="smollm2-135m", n_ctx=2048, max_tokens=32))
    >>> llm.chat([{"role": "user", "content": "Say hi."}])
    'Hi! How can I help you today?'
    >>> "".join(llm.stream([{"role": "user", "content": "Say hi."}]))
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chatbot.model_files import DEFAULT_MODEL, check_gguf, get_model_path
from pmirs.errors import ModelUnavailableError

Message = Mapping[str, str]


@dataclass(frozen=True)
class LLMSettings:
    """How to load and sample the local model."""

    model: str | Path = DEFAULT_MODEL  # a name from chatbot.model_files.list_models() or a .gguf path
    n_ctx: int = 4096  # context window in tokens (prompt + answer)
    n_threads: int = 2  # CPU threads for generation and prompt processing
    temperature: float = 0.2  # low: grounded answers should stick to the context
    max_tokens: int = 256  # most tokens generated per answer
    repeat_penalty: float = 1.1  # >= 1.1 stops SmolLM2-135M from looping
    top_p: float = 0.95  # nucleus sampling cut-off
    seed: int = 0  # fixed for reproducible answers; llama.cpp's -1 means random
    cache_dir: Path | None = None  # where the chunked default model is joined (None: ~/.cache/pmirs/models)

    def __post_init__(self) -> None:
        if self.n_ctx < 64:
            raise ValueError(f"n_ctx must be at least 64, got {self.n_ctx}")
        if not 0 < self.max_tokens < self.n_ctx:
            raise ValueError(f"max_tokens must be in 1..n_ctx-1, got {self.max_tokens} (n_ctx={self.n_ctx})")
        if self.n_threads < 1:
            raise ValueError(f"n_threads must be >= 1, got {self.n_threads}")
        if self.temperature < 0 or self.repeat_penalty <= 0:
            raise ValueError("temperature must be >= 0 and repeat_penalty > 0")


class LocalLLM:
    """A loaded GGUF chat model with blocking and streaming chat and a token counter.

    One instance holds the weights in memory (~100 MB for SmolLM2-135M, ~500 MB for the Qwen
    0.5B); share it. Calls are serialised with a (re-entrant) lock because a llama.cpp context is not
    thread-safe (a UI may call from several threads).

    Raises:
        ModelUnavailableError: the model cannot be found or llama.cpp cannot load it; the
            message names the file and the reason.
    """

    def __init__(self, settings: LLMSettings | None = None) -> None:
        self.settings = settings or LLMSettings()
        self.model_path = get_model_path(self.settings.model, self.settings.cache_dir)
        self._llama = _load(self.model_path, self.settings)
        self._lock = threading.RLock()  # re-entrant: count_tokens may be called while streaming

    @property
    def n_ctx(self) -> int:
        """The context window (prompt + answer) in tokens."""
        return self.settings.n_ctx

    @property
    def max_tokens(self) -> int:
        """The most tokens one answer may take."""
        return self.settings.max_tokens

    @property
    def model_name(self) -> str:
        """The GGUF file name, for logs and benchmark records."""
        return self.model_path.name

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes with this model's tokenizer (no BOS), to budget prompts exactly."""
        if not text:
            return 0
        with self._lock:
            return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def chat(
        self, messages: Sequence[Message], *, max_tokens: int | None = None, stop: list[str] | None = None
    ) -> str:
        """The model's whole reply to ``messages`` (OpenAI-style ``{"role", "content"}`` dicts)."""
        with self._lock:
            out = self._llama.create_chat_completion(
                messages=[dict(m) for m in messages], stream=False, **self._sampling(max_tokens, stop)
            )
        return str(out["choices"][0]["message"].get("content") or "")

    def stream(
        self, messages: Sequence[Message], *, max_tokens: int | None = None, stop: list[str] | None = None
    ) -> Iterator[str]:
        """Yield the reply piece by piece (about a token each) as llama.cpp produces it.

        The model stays locked until the generator is exhausted or closed.
        """
        with self._lock:
            chunks = self._llama.create_chat_completion(
                messages=[dict(m) for m in messages], stream=True, **self._sampling(max_tokens, stop)
            )
            for chunk in chunks:
                piece = chunk["choices"][0]["delta"].get("content")
                if piece:
                    yield piece

    def close(self) -> None:
        """Free the model's memory now rather than at garbage collection."""
        with self._lock:
            self._llama.close()

    def _sampling(self, max_tokens: int | None, stop: list[str] | None) -> dict[str, Any]:
        """Keyword arguments for ``create_chat_completion`` from the settings."""
        s = self.settings
        return {
            "max_tokens": max_tokens or s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "repeat_penalty": s.repeat_penalty,
            "seed": s.seed,
            "stop": stop,
        }


def _load(path: Path, settings: LLMSettings) -> Any:
    """Open the GGUF with llama.cpp, turning its bare errors into one that names the file."""
    check_gguf(path)
    try:
        from llama_cpp import Llama
    except ImportError as e:
        raise ModelUnavailableError(
            "llama-cpp-python is not installed: pip install llama-cpp-python==0.3.36 "
            "(built with CMAKE_ARGS=-DGGML_NATIVE=OFF)"
        ) from e
    try:
        return Llama(
            model_path=str(path),
            n_ctx=settings.n_ctx,
            n_threads=settings.n_threads,
            n_threads_batch=settings.n_threads,
            seed=settings.seed,
            chat_format=None,  # use the chat template stored in the GGUF
            verbose=False,
        )
    except (ValueError, RuntimeError, OSError) as e:
        raise ModelUnavailableError(f"llama.cpp could not load model file {path}: {e}") from e
