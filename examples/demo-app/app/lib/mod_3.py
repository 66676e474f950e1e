"""Demo module 3."""

def handler_3(x):
    return x * 3
