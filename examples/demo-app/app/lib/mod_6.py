"""Demo module 6."""

def handler_6(x):
    return x * 6
