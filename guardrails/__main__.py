"""``python -m guardrails``: the ``recsys-guardrails`` command line."""

from .cli import main

if __name__ == "__main__":
    main(prog_name="recsys-guardrails")
