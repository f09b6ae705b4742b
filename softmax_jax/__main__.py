import sys

from softmax_jax.cli._main import main

sys.exit(main())
