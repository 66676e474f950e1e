"""Demo module 16."""

def handler_16(x):
    return x * 16
