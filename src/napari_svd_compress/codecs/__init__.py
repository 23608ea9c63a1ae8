"""Built-in codecs.  Importing this package registers them (see ``registry``)."""

from . import svd  # noqa: F401
from . import pca  # noqa: F401
from . import kmeans  # noqa: F401
from . import standard  # noqa: F401
