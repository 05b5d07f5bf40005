"""Errors that name the problem, the file or argument, and the fix. Each is a ValueError, so `except ValueError`
still works. Every failure a user can cause (an argument, a file handed to explain) is one of these; the command
line turns each into one line on stderr and exit code 2 (`--debug` shows the traceback)."""


class ExplainError(ValueError):
    """Base class: the message says what is wrong and what to do about it."""


class UnknownTaskError(ExplainError):
    pass


class NotCachedError(ExplainError):
    """A file that is not in the Hugging Face cache while the Hub is unreachable or offline mode is on."""


class CorruptFileError(ExplainError):
    """A checkpoint, tokenizer or config file that is truncated or not what its name says."""


class UnsupportedError(ExplainError):
    """Something explain knows about but does not run (an architecture, a task, remote code, a dtype)."""


class ArgumentError(ExplainError):
    """An argument of a call that cannot work (wrong type, out of range), refused before any work is done."""


class ConfigValueError(ExplainError):
    """A config.json (or GGUF metadata) value explain cannot use: a size that is not a positive integer, a NaN
    epsilon, more layers than the checkpoint holds or the machine can hold."""


class OutsideFolderError(ExplainError):
    """A path that a model folder's own files name (an index entry, a symbolic link) and that leads outside it."""


class ChatTemplateError(ExplainError):
    """A chat template that fails, runs past its time limit or writes more than its output limit."""


class CacheWriteError(ExplainError):
    """The Hugging Face cache (or a folder explain saves into) cannot be written: read-only, full, no permission."""


class TraceFileError(ExplainError):
    """A trace file that cannot be read back (missing, a folder, wrong format, truncated, another program's JSON)."""
