"""Demo module 18."""

def handler_18(x):
    return x * 18
