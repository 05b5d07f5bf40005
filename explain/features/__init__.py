"""Features built on a loaded pipeline or a run's events: explain.compare (compare.py), the decoding strategies'
trees as data (trees.py) and the embedded model's provisioning (embedded.py: explain.provision)."""
