"""Which backend produced a trace and which model code ran, as a line of the dashboard's header.

The trace's meta says it (explain/pipeline.py for the explain backend, explain/backends/transformers/build.py for
the transformers backend): the backend, the file that defines the model class (explain/models/llama.py, or
transformers' modeling_llama.py, linked to its source at the installed version), whether a repository's own code
ran (trust_remote_code=True) and whether the pipeline was built outside explain (explain.attach).
"""

from __future__ import annotations

from html import escape


def code_html(meta: dict) -> str:
    """Which backend ran and the model code it ran (the trace's meta): explain's model file, or transformers'
    modeling file, linked to its source at the installed version; remote code is marked."""
    backend, path = str(meta.get("backend") or ""), str(meta.get("source_file") or "")
    if not backend:
        return ""
    name = escape(path.rsplit("/", 1)[-1] or "?")
    marker = "transformers/models/"
    if marker in path and meta.get("transformers_version"):
        href = (f"https://github.com/huggingface/transformers/blob/v{meta['transformers_version']}/src/"
                f"{marker}{path.split(marker, 1)[1]}")
        name = f"<a href='{escape(href)}' target='_blank' rel='noopener'>{name}</a>"
    remote = " <b style='color: #cf222e'>remote code ran</b>" if meta.get("remote_code") else ""
    built = " \u00b7 built outside explain" if "outside explain" in str(meta.get("built_by", "")) else ""
    return (f"<span class='explain-muted explain-backend' title='{escape(path)}'>backend {escape(backend)} \u00b7 "
            f"<code>{name}</code>{built}</span>{remote}")
