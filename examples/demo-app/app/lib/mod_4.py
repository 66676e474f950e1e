"""Demo module 4."""

def handler_4(x):
    return x * 4
