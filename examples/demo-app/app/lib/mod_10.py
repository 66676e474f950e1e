"""Demo module 10."""

def handler_10(x):
    return x * 10
