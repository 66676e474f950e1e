"""Demo module 17."""

def handler_17(x):
    return x * 17
