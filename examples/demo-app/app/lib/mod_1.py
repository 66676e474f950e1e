"""Demo module 1."""

def handler_1(x):
    return x * 1
