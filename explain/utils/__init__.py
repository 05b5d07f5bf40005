"""Small helpers that any layer may use and that know nothing of a pipeline: byte sizes (units.py), device
spellings (devices.py), safe file writes (files.py) and the dtype names explain accepts (dtypes.py)."""
