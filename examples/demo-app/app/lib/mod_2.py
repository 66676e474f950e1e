"""Demo module 2."""

def handler_2(x):
    return x * 2
