"""Chat templates: jinja2 code that comes with a model, rendered in a sandbox with a time limit and an output limit.

A chat template is a program someone else wrote. It runs in jinja2's ImmutableSandboxedEnvironment (the one
transformers uses: no attribute starting with "_", no changing lists or dicts, no Python builtins), with the same
extras transformers adds (`raise_exception`, `strftime_now`, `tojson`, `namespace`, `{% generation %}`), and two
bounds transformers does not have:

  time     every loop step, call, attribute lookup and operator checks the clock: a template still running after
           TIME_LIMIT seconds (nested loops) stops with a ChatTemplateError naming its source file;
  output   every string or list the template builds (a list item counting as 16 characters), and the text it
           writes, is counted before it is made:
           beyond the output limit (OUTPUT_LIMIT characters, or 4x the messages' own size if that is more) it stops
           with the same error, instead of exhausting memory.

    render(template, source="chat_template.jinja", messages=[...], add_generation_prompt=True, bos_token=...)
"""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import datetime
from functools import lru_cache

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import ChatTemplateError

TIME_LIMIT = 5.0  # seconds; real chat templates render in milliseconds
OUTPUT_LIMIT = 16 * 2**20  # characters of any one string, list or the output (a prompt of ~4 million tokens)
WIDTH = re.compile(r"%[-+ #0]*(\d+)|\{[^{}]*:[^{}]*?(\d+)[^{}]*\}")  # field widths in "%10s" and "{:>10}" formats
TEMPLATE_LIMIT = 2**20  # characters of template source; the longest real ones (with tool instructions) are ~50,000
LIST_ITEM = 16  # what one item of a list costs against the output limit, in characters
BIG_INTEGER_BITS = 1 << 16  # a template computes indices and counters, not numbers of 20,000 digits

_render_state = threading.local()  # the limits of the render running on this thread


class TemplateLimitError(ChatTemplateError):
    """A chat template that ran past its time limit or built more than its output limit."""


class _Budget:
    def __init__(self, source: str, seconds: float, characters: int):
        self.source, self.seconds, self.characters = source, seconds, characters
        self.deadline = time.monotonic() + seconds
        self.written = 0

    def tick(self) -> None:
        if time.monotonic() > self.deadline:
            raise TemplateLimitError(
                f"the chat template from {self.source} ran for more than {self.seconds:g} s and "
                "was stopped (it loops too long: a template that renders a conversation takes "
                "milliseconds); fix the template, or pass a plain string prompt"
            )

    def size(self, length: int, what: str, unit: str = "characters", built: bool = False) -> None:
        if length > self.characters:
            when = "was stopped" if built else "was stopped before making it"
            raise TemplateLimitError(
                f"the chat template from {self.source} {what} of {length:,} {unit}, beyond "
                f"the limit of {self.characters:,}, and {when}; fix the template, or pass a "
                "plain string prompt"
            )


def _budget() -> _Budget | None:
    return getattr(_render_state, "budget", None)


def _length(value) -> int | None:
    """A string's characters; a list's items count LIST_ITEM characters each (each is a pointer and an object)."""
    if isinstance(value, str):
        return len(value)
    return len(value) * LIST_ITEM if isinstance(value, (list, tuple)) else None


def _check_widths(text: str) -> None:
    budget = _budget()
    if budget is not None:
        for match in WIDTH.finditer(text):
            budget.size(int(match.group(1) or match.group(2)), "asks for a field width")


class BoundedCodeGenerator(CodeGenerator):
    """jinja2's code generator, with every loop's iterable wrapped so that each step checks the clock, and `~`
    joining through a method that counts the characters first."""

    def visit_Template(self, node, frame=None):
        for loop in node.find_all(nodes.For):
            loop.iter = nodes.Call(nodes.EnvironmentAttribute("bounded_iter"), [loop.iter], [], None, None)
        return super().visit_Template(node, frame)

    def visit_Concat(self, node, frame):
        if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
            return super().visit_Concat(node, frame)
        self.write("environment.bounded_concat((")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    code_generator_class = BoundedCodeGenerator
    intercepted_binops = frozenset({"*", "**", "+", "%"})

    def bounded_iter(self, iterable):
        budget = _budget()
        for item in iterable:
            if budget is not None:
                budget.tick()
            yield item

    def bounded_concat(self, parts):
        budget = _budget()
        parts = [str(part) for part in parts]
        if budget is not None:
            budget.tick()
            budget.size(sum(map(len, parts)), "joins a string (~)")
        return "".join(parts)

    def call_binop(self, context, operator, left, right):
        budget = _budget()
        if budget is not None:
            budget.tick()
            if operator == "*":
                for sequence, count in ((left, right), (right, left)):
                    if _length(sequence) is not None and isinstance(count, int):
                        budget.size(_length(sequence) * max(count, 0), "repeats a string or list (*)")
                if isinstance(left, int) and isinstance(right, int):
                    budget.size(
                        (left.bit_length() + right.bit_length()) // 8, "multiplies integers into a number", "bytes"
                    )
            elif operator == "+" and _length(left) is not None and _length(right) is not None:
                budget.size(_length(left) + _length(right), "adds strings or lists (+)")
            elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
                if right * left.bit_length() > BIG_INTEGER_BITS:
                    budget.size(right * left.bit_length() // 8, "raises an integer to a power", "bytes")
            elif operator == "%" and isinstance(left, str):
                _check_widths(left)
        return super().call_binop(context, operator, left, right)

    def getattr(self, obj, attribute):
        budget = _budget()
        if budget is not None:
            budget.tick()
            if isinstance(obj, str) and attribute in ("format", "format_map"):
                _check_widths(obj)
        return super().getattr(obj, attribute)

    def getitem(self, obj, argument):
        budget = _budget()
        if budget is not None:
            budget.tick()
        return super().getitem(obj, argument)

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 (jinja2's own spelling, for keyword names)
        budget = _budget()
        if budget is not None:
            budget.tick()
            if isinstance(getattr(__obj, "__self__", None), (str, list)):  # "a".ljust(10**10), "a".center(...)
                for value in (*args, *kwargs.values()):
                    if isinstance(value, int) and not isinstance(value, bool):
                        budget.size(value, f"asks {getattr(__obj, '__name__', 'a method')}() for a size")
        result = super().call(__context, __obj, *args, **kwargs)
        if budget is not None and _length(result) is not None:
            budget.size(_length(result), "built a value", built=True)
        return result


SIZE_FILTERS = ("center", "indent", "wordwrap", "truncate", "tojson")  # filters whose number arguments are sizes


def _bounded_filter(name: str, function):
    """A jinja2 filter whose size arguments (center's width, indent's, tojson's, format's field widths) are
    checked before it runs and whose result is counted after."""

    def bounded(*args, **kwargs):
        budget = _budget()
        if budget is not None:
            budget.tick()
            if name in SIZE_FILTERS:
                for value in (*args[1:], *kwargs.values()):
                    if isinstance(value, int) and not isinstance(value, bool):
                        budget.size(value, f"asks the {name} filter for a size")
            elif name == "format" and args and isinstance(args[0], str):
                _check_widths(args[0])
            elif name == "join":  # join(eval_context, value, separator): every gap holds the separator
                items = next((a for a in args if isinstance(a, (list, tuple))), None)
                separator = args[2] if len(args) > 2 and isinstance(args[2], str) else kwargs.get("d", "")
                if items is not None and isinstance(separator, str):
                    budget.size(
                        len(items) * len(separator) + sum(len(i) for i in items if isinstance(i, str)),
                        "joins a string (join filter)",
                    )
        result = function(*args, **kwargs)
        if budget is not None and _length(result) is not None:
            budget.size(_length(result), f"built a value with the {name} filter", built=True)
        return result

    if hasattr(function, "jinja_pass_arg"):  # keep jinja2's pass_context / pass_environment marker
        bounded.jinja_pass_arg = function.jinja_pass_arg  # type: ignore[attr-defined]  # jinja2's marker, on a function
    bounded.__name__ = getattr(function, "__name__", name)
    return bounded


class GenerationTag(Extension):  # `{% generation %}` marks assistant text for masks; here it just renders
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def _check_name(name):
    if isinstance(name, str) and name.startswith("_"):
        raise jinja2.exceptions.SecurityError(f"chat templates cannot set {name!r} on a namespace")


class TemplateNamespace(jinja2.utils.Namespace):  # no underscore attributes, so no reaching into internals
    def __init__(*args, **kwargs):
        self, attrs = args[0], dict(*args[1:], **kwargs)
        for name in attrs:
            _check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)


class TemplateDict:  # dict(...) and dict.fromkeys(...), without the rest of the type
    __call__: staticmethod = staticmethod(dict)
    fromkeys = staticmethod(dict.fromkeys)


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):  # no HTML escaping
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=16)
def compile_template(template: str) -> jinja2.Template:
    """Compile a chat template in the sandbox transformers uses, with the same extras and filters, bounded."""
    env = BoundedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, loopcontrols])
    env.filters["tojson"] = _tojson
    env.filters = {name: _bounded_filter(name, function) for name, function in env.filters.items()}
    env.globals.update(
        raise_exception=_raise_exception,
        strftime_now=lambda fmt: datetime.now().strftime(fmt),
        dict=TemplateDict(),
        namespace=TemplateNamespace,
    )
    return env.from_string(template)


def _characters(value) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_characters(k) + _characters(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return sum(_characters(v) for v in value)
    return 8


def render(
    template: str, source: str, time_limit: float | None = None, output_limit: int | None = None, **variables
) -> str:
    """Render a chat template with these variables, within the time and output limits; any failure (the
    template's own raise_exception, a mistake in it, a limit) is a ChatTemplateError naming `source`."""
    limit = output_limit if output_limit is not None else max(OUTPUT_LIMIT, 4 * _characters(variables))
    budget = _Budget(source, TIME_LIMIT if time_limit is None else time_limit, limit)
    outer, _render_state.budget = _budget(), budget
    try:
        if len(template) > TEMPLATE_LIMIT:
            raise TemplateLimitError(
                f"the chat template from {source} is {len(template):,} characters long; real "
                f"chat templates are a few thousand (explain compiles at most {TEMPLATE_LIMIT:,}): "
                "pass another with chat_template=, or a plain string prompt"
            )
        compiled = compile_template(template)
        pieces = []
        for piece in compiled.generate(**variables):
            budget.written += len(piece)
            budget.size(budget.written, "wrote a prompt", built=True)
            budget.tick()
            pieces.append(piece)
        return "".join(pieces)
    except TemplateLimitError:
        raise
    except jinja2.exceptions.TemplateSyntaxError as error:
        raise ChatTemplateError(
            f"the chat template from {source} is not valid jinja (line {error.lineno}: "
            f"{error.message}); fix the template or pass another with chat_template="
        ) from None
    except (MemoryError, RecursionError) as error:
        what = "ran out of memory" if isinstance(error, MemoryError) else "recursed too deeply"
        raise TemplateLimitError(
            f"the chat template from {source} {what} and was stopped; fix the template, or pass a plain string prompt"
        ) from None
    except Exception as error:  # raise_exception(...), a mistake in the template, a value it cannot handle
        message = str(error) or type(error).__name__
        raise ChatTemplateError(f"the chat template from {source} failed on these messages: {message}") from error
    finally:
        _render_state.budget = outer
