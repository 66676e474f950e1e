"""Demo module 12."""

def handler_12(x):
    return x * 12
