#!/usr/bin/env bash
# Wheels that the GPU machine's Python (3.12, with torch, transformers, accelerate, safetensors, tokenizers, jinja2,
# huggingface_hub, numpy, pyyaml, tqdm, requests, pygments, narwhals, packaging) lacks for `python -m bench.gpu`:
# gguf (explain imports it) and the live widget's ipywidgets, anywidget, plotly and what they need.
# Run here, in the repository's root, once: the wheels land in .whl/ (ignored by git), about 20 MB, and travel
# to the GPU machine with the run's `carry: [".whl"]` (bench/README.md says how).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl \
    gguf==0.19.0 ipywidgets==8.1.8 anywidget==0.9.21 psygnal==0.15.1 plotly==6.5.0 \
    traitlets==5.14.3 comm==0.2.3 widgetsnbextension==4.0.15 jupyterlab_widgets==3.0.16 \
    ipython==9.8.0 ipython_pygments_lexers==1.1.1 decorator==5.2.1 jedi==0.19.2 parso==0.8.5 \
    matplotlib-inline==0.2.1 pexpect==4.9.0 ptyprocess==0.7.0 prompt_toolkit==3.0.52 wcwidth==0.2.14 \
    stack_data==0.6.3 asttokens==3.0.1 executing==2.2.1 pure_eval==0.2.3
du -sh .whl
