"""What a pipeline call accepts as text_inputs, checked before anything runs.

    check_inputs("Hello")                                   -> one prompt
    check_inputs([{"role": "user", "content": "Hi"}])       -> one chat
    check_inputs(["a", "b"])                                -> a batch: every item is checked before the first runs,
                                                               so a bad item never costs the results before it
    check_inputs(["a", [{"role": "user", "content": "b"}]]) -> refused: transformers cannot run strings and chats
                                                               in one list
Text must be Unicode that can be written as UTF-8: a lone surrogate (half of a UTF-16 pair, what a badly decoded
file or command line gives) is refused naming where it is, as is a chat message whose role or content is not a
string.
"""

from __future__ import annotations

from collections.abc import Mapping

from .errors import ArgumentError

FORMS = 'a string, a chat (a list of {"role": ..., "content": ...} dicts) or a non-empty list of those'


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_text(text: str, where: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ArgumentError(
            f"{where} holds {text[error.start]!r} at character {error.start}: a lone surrogate (half "
            "of a UTF-16 pair), which is not a character and cannot be tokenized. The text was decoded "
            "wrongly; decode it as UTF-8, or remove the character"
        ) from None


def _check_strings(value, where: str) -> None:
    if isinstance(value, str):
        check_text(value, where)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_strings(item, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_strings(item, f"{where}[{index}]")


def is_chat(value) -> bool:
    """A list of messages (dicts), as opposed to a batch of prompts."""
    return isinstance(value, (list, tuple)) and len(value) > 0 and any(isinstance(m, Mapping) for m in value)


def check_chat(messages, where: str) -> None:
    for index, message in enumerate(messages):
        here = f"{where}[{index}]"
        if not isinstance(message, Mapping):
            raise ArgumentError(
                f"{here} is a {type(message).__name__}, not a message; every message of a chat is a "
                'dict such as {"role": "user", "content": "Hi"}'
            )
        role = message.get("role")
        if not isinstance(role, str) or not role:
            raise ArgumentError(
                f'{here} has role {role!r}; a message\'s role is a string such as "system", "user" or "assistant"'
            )
        content = message.get("content")
        if not isinstance(content, str):
            raise ArgumentError(
                f"{here} ({role}) has content {_short(content)} ({type(content).__name__}); "
                "explain runs text models, so a message's content is a string"
            )
        _check_strings(dict(message), here)


def check_prompt(value, where: str = "text_inputs") -> None:
    """One prompt: a string or a chat."""
    if isinstance(value, str):
        check_text(value, where)
    elif is_chat(value):
        check_chat(value, where)
    else:
        raise ArgumentError(f"{where} is a {type(value).__name__} ({_short(value)}); a prompt is {FORMS}")


def check_inputs(text_inputs) -> bool:
    """Check a call's text_inputs; True for a batch (a list of prompts), False for one prompt."""
    if isinstance(text_inputs, str) or is_chat(text_inputs):
        check_prompt(text_inputs)
        return False
    if isinstance(text_inputs, (list, tuple)) and text_inputs:
        for index, item in enumerate(text_inputs):
            check_prompt(item, f"text_inputs[{index}]")
        kinds = ["chat" if is_chat(item) else "string" for item in text_inputs]
        if len(set(kinds)) > 1:
            raise ArgumentError(
                f"text_inputs mixes strings and chats (text_inputs[{kinds.index('string')}] is a string, "
                f"text_inputs[{kinds.index('chat')}] a chat): transformers' pipeline reads a list as chats only when "
                "every item is one, so it takes this list as strings and fails on the chat (TypeError: can only "
                'concatenate str (not "list") to str). Call the pipeline once with the strings and once with '
                "the chats"
            )
        return True
    raise ArgumentError(f"text_inputs must be {FORMS}; got {type(text_inputs).__name__} {_short(text_inputs)}")


def check_batch_size(value) -> int:
    """batch_size as transformers' pipeline takes it: None means 1; else a positive integer (its DataLoader refuses
    anything else: "batch_size should be a positive integer value")."""
    if value is None:
        return 1
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentError(
            f"batch_size={_short(value)} is not an integer; pass a positive integer, the number of "
            "prompts of a list generated together (1, the default, runs them one after another)"
        )
    if value < 1:
        raise ArgumentError(
            f"batch_size={value} is not positive; pass a positive integer, the number of prompts "
            "of a list generated together (1, the default, runs them one after another)"
        )
    return value
