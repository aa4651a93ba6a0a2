"""``python -m sgn_theano``: the ``sgn-bench`` command."""

import sys

from sgn_theano.bench.cli import main

sys.exit(main())
