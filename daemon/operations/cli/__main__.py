"""``python -m calstream.daemon.operations.cli``: the same as the ``calstream`` script."""

import sys

from calstream.daemon.operations.cli.main import main

sys.exit(main())
