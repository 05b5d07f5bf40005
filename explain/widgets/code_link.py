"""Which backend produced a trace and which model code ran, as a line of the dashboard's header.

The trace's meta says it (explain/pipeline.py for the explain backend, explain/backends/transformers/build.py for
the transformers backend): the backend, the file that defines the model class (explain/models/llama.py, or
transformers' modeling_llama.py, linked to its source at the installed version), whether a repository's own code
ran (trust_remote_code=True) and whether the pipeline was built outside explain (explain.attach).
"""

from __future__ import annotations

import re
from html import escape

# A shared trace's meta is data from someone else: a link is built only from values of the form explain itself writes
# (a released transformers version, a modeling file of transformers/models/), so a trace cannot steer it elsewhere.
RELEASE = re.compile(r"[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}", re.ASCII)  # the tags v4.57.1, v5.0.0 ...
MODELING_FILE = re.compile(r"[a-z0-9_]{1,64}/(modeling|modular)_[a-z0-9_]{1,64}\.py", re.ASCII)
MARKER = "transformers/models/"


def source_link(path: str, version) -> str | None:
    """transformers' source of the modeling file at `path`, at the release `version`, or None when either is not
    what explain writes (a dev or local version has no tag to link to)."""
    if not isinstance(version, str) or not RELEASE.fullmatch(version) or MARKER not in path:
        return None
    relative = path.rsplit(MARKER, 1)[1]
    if not MODELING_FILE.fullmatch(relative):
        return None
    return f"https://github.com/huggingface/transformers/blob/v{version}/src/{MARKER}{relative}"


def code_html(meta: dict) -> str:
    """Which backend ran and the model code it ran (the trace's meta): explain's model file, or transformers'
    modeling file, linked to its source at the installed version; remote code is marked."""
    backend, path = str(meta.get("backend") or ""), str(meta.get("source_file") or "")
    if not backend:
        return ""
    name = escape(path.rsplit("/", 1)[-1] or "?")
    href = source_link(path, meta.get("transformers_version"))
    if href:
        name = f"<a href='{escape(href)}' target='_blank' rel='noopener'>{name}</a>"
    remote = " <b style='color: #cf222e'>remote code ran</b>" if meta.get("remote_code") else ""
    built = " \u00b7 built outside explain" if "outside explain" in str(meta.get("built_by", "")) else ""
    return (
        f"<span class='explain-muted explain-backend' title='{escape(path)}'>backend {escape(backend)} \u00b7 "
        f"<code>{name}</code>{built}</span>{remote}"
    )
