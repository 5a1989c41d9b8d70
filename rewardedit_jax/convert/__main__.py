"""Entry point of ``python -m rewardedit_jax.convert`` (see :mod:`rewardedit_jax.convert.cli`)."""

import sys

from rewardedit_jax.convert.cli import main

if __name__ == "__main__":
    sys.exit(main())
