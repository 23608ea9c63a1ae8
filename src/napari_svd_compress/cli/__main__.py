"""``python -m napari_svd_compress.cli``: the command line."""

import sys

from . import main

sys.exit(main())
