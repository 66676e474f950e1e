"""Demo module 20."""

def handler_20(x):
    return x * 20
