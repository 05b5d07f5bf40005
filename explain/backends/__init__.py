"""The producers of a trace. Both emit the same events (stages, kinds, data fields), so every view, the console,
save and replay work on either.

    backend="explain"        explain/pipeline.py: explain's own readable model files (explain/models/), proven
                             equal to transformers, for the architectures explain implements
    backend="transformers"   explain/backends/transformers/: the real transformers.pipeline(), traced from outside
                             (hooks on the objects transformers builds); any model transformers runs

`import explain` imports neither transformers nor this package's transformers module; it loads on first use.
"""

from __future__ import annotations

import importlib.util

from ..errors import ExplainError

BACKENDS = ("explain", "transformers")
TRANSFORMERS_VERSIONS = (5, 6)  # the major versions whose internals the transformers backend observes: [5, 6)
INSTALL_HINT = 'pip install "explain[transformers]"'


def check_backend(backend) -> str:
    if backend not in BACKENDS:
        raise ExplainError(
            f'unknown backend {backend!r}; use backend="explain" (explain\'s readable models, the '
            'default) or backend="transformers" (the real transformers pipeline, traced)'
        )
    return backend


def transformers_backend():
    """The transformers backend module, imported now; a clear error when transformers is missing or too old/new."""
    if importlib.util.find_spec("transformers") is None:
        raise ExplainError(
            f'backend="transformers" needs the transformers library, which is not installed: '
            f'{INSTALL_HINT} (or use the default backend="explain", which needs no transformers)'
        )
    import transformers

    major = int(transformers.__version__.split(".")[0])
    if not TRANSFORMERS_VERSIONS[0] <= major < TRANSFORMERS_VERSIONS[1]:
        raise ExplainError(
            f'backend="transformers" traces transformers {TRANSFORMERS_VERSIONS[0]}.x; this is '
            f"transformers {transformers.__version__}: {INSTALL_HINT} installs a version it knows"
        )
    from . import transformers as backend

    return backend
