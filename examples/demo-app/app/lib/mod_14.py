"""Demo module 14."""

def handler_14(x):
    return x * 14
