"""Errors that name the problem and the fix. Each is a ValueError, so `except ValueError` still works."""


class ExplainError(ValueError):
    """Base class: the message says what is wrong and what to do about it."""


class UnknownTaskError(ExplainError):
    pass


class NotCachedError(ExplainError):
    """A file that is not in the Hugging Face cache while the Hub is unreachable or offline mode is on."""


class CorruptFileError(ExplainError):
    """A checkpoint, tokenizer or config file that is truncated or not what its name says."""


class UnsupportedError(ExplainError):
    """Something explain knows about but does not run (an architecture, a task, remote code)."""
