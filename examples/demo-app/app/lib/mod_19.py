"""Demo module 19."""

def handler_19(x):
    return x * 19
