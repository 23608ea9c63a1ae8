"""Built-in codecs.  Importing this package registers them (see ``registry``)."""

# ruff: noqa: I001, F401  (import order is the order the methods are offered in)
from . import svd
from . import pca
from . import kmeans
from . import standard
from . import imagecodecs_baselines
from . import learned
