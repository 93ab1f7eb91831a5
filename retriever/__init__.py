"""The retriever: the untrusted search service (FastAPI + Chroma).

It stores and searches obfuscated vectors and ciphertexts it cannot read, and imports nothing from
the trusted side except the wire protocol (``pmirs.protocol``) and ``pmirs.errors``.
"""
