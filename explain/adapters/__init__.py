def load_adapter(*a, **k): raise NotImplementedError
