"""PMIRS: privacy-preserving multimodal retrieval for LLM chatbots.

This package holds what both sides share (errors, the wire protocol) and the ``pmirs`` CLI.
The trusted side lives in ``middleware``, the untrusted service in ``retriever``.
"""

__version__ = "0.1.0"
