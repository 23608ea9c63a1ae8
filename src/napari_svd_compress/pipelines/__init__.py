"""Jobs larger than one :func:`napari_svd_compress.compress` call, built on the API.

:mod:`.stack`
    n-D stacks and dask arrays, one dask task per plane.
:mod:`.large`
    One huge 2-D plane by banded out-of-core SVD.
:mod:`.batch`
    Many files on dask.distributed, restartable, with a manifest.
:mod:`.sweep`
    Rate-distortion sweeps over several methods and settings.
"""
