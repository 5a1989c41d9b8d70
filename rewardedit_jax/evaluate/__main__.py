"""``python -m rewardedit_jax.evaluate``."""

import sys

from rewardedit_jax.evaluate.command import main

sys.exit(main())
