"""Demo module 15."""

def handler_15(x):
    return x * 15
