"""Errors that name the problem, the file or argument, and the fix. Each is a ValueError, so `except ValueError`
still works (but GenerationInterrupted, a KeyboardInterrupt). Every failure a user can cause (an argument, a file
handed to explain) is one of these; the command line turns each into one line on stderr and exit code 2 (`--debug`
shows the traceback)."""


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


class GenerationInterrupted(KeyboardInterrupt):
    """Ctrl-C (Kernel > Interrupt in Jupyter) while a generation ran. The run was ended cleanly first: the trace holds
    every step made, a generation/end event with stop_reason "interrupted", and the decoded text so far.

    It is a KeyboardInterrupt, so a script stops as on any Ctrl-C and `except KeyboardInterrupt` still catches it;
    in IPython and Jupyter it is shown as one line instead of a traceback through explain's and torch's frames
    (and, being an error, it still stops a Run All)."""


def interrupted(message: str) -> GenerationInterrupted:
    """The exception to raise for a Ctrl-C during generation; under IPython it will show as one line."""
    _one_line_in_ipython()
    return GenerationInterrupted(message)


def _one_line_in_ipython() -> None:
    """Register, once, an IPython handler that shows GenerationInterrupted as one line. Only when IPython is already
    running this code (explain never imports IPython), and never over another library's handler."""
    import sys

    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if shell is None or not hasattr(shell, "set_custom_exc"):
        return
    handled = tuple(getattr(shell, "custom_exceptions", ()) or ())
    if GenerationInterrupted in handled:
        return
    if handled:  # someone else's handler: leave it, the interrupt shows as a traceback there
        return

    def one_line(shell, etype, value, tb, tb_offset=None):
        shell._showtraceback(etype, value, [f"{etype.__name__}: {value}"])  # what ipykernel sends as the error
        return None

    shell.set_custom_exc((GenerationInterrupted,), one_line)
