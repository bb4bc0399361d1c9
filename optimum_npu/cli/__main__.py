"""``python -m optimum_npu.cli``: the ``optimum-npu`` command."""

import sys

from optimum_npu.cli import main

sys.exit(main())
