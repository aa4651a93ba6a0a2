"""``python -m sgn_theano``: the ``sgn-bench`` command."""

import sys

from sgn_theano.cli import main

sys.exit(main())
