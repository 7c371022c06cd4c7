"""``python -m trioquic``: the same command line as ``trioquic``."""

from .cli import run

if __name__ == "__main__":
    run()
