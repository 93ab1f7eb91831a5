"""One exception hierarchy for PMIRS, so callers can catch ``PMIRSError`` at the edge."""


class PMIRSError(Exception):
    """Base class of every error PMIRS raises on purpose."""


class ModelUnavailableError(PMIRSError):
    """A model file or the package that carries it is missing or unreadable."""


class DatasetError(PMIRSError):
    """A dataset folder does not have the expected layout or holds unreadable files."""


class InvalidImageError(PMIRSError):
    """Bytes that were supposed to be an image could not be decoded as one."""


class InvalidMessage(PMIRSError):
    """The one generic error for every failed decryption, MAC check, replay or stale message.

    It deliberately never says which check failed.
    """

    def __init__(self, message: str = "invalid message") -> None:
        super().__init__(message)


class ModelIntegrityError(ModelUnavailableError):
    """A model file does not have the pinned size or SHA-256, so it is refused (and deleted if we made it)."""


class PromptTooLongError(PMIRSError):
    """The question and system prompt alone do not fit the model's context window."""


class ServerUnavailableError(PMIRSError):
    """The retriever service could not be reached (refused, timed out, or answered 5xx)."""


class RequestError(PMIRSError):
    """A request was well-formed on the wire but its content is invalid (HTTP 400/413/422)."""


class AuthenticationError(PMIRSError):
    """The server refused the session or the handshake (HTTP 401), or its identity is not pinned."""


class AccessDeniedError(PMIRSError):
    """The session's tenant may not touch this resource (HTTP 403); nothing was changed."""


class NotFoundError(PMIRSError):
    """The collection (or item) does not exist (HTTP 404)."""


class ConflictError(PMIRSError):
    """The request conflicts with the stored state, e.g. a stale key version (HTTP 409)."""


class KeystoreError(PMIRSError):
    """The local keystore could not be opened: wrong passphrase, corrupted or tampered file."""


class FederatedError(PMIRSError):
    """A federated run is misconfigured (settings, partitions) or a Flower run failed."""


class UploadRejectedError(PMIRSError):
    """A file uploaded to the UI was refused before use: too large, or not a JPEG/PNG image."""
