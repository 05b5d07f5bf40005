"""The benchmark: explain against transformers on the embedded model (`python -m bench`; see bench/run.py)."""
