"""Demo module 5."""

def handler_5(x):
    return x * 5
