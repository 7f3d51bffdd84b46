"""dgnam: the preferred inputs of neurons in trained image classifiers, by activation
maximization through a deep generator network (DGN-AM, Nguyen et al., NIPS 2016).

The calls are dgnam's commands (``dgnam forward``, ``backward``, ``info``, ``synthesize``,
``demo``, ``dgnam-convert``) with NumPy arrays in and out; docs/python.md shows them in use
and ``__init__.pyi`` documents every argument.
"""

from ._dgnam import Net, __version__, convert, demo, synthesize

__all__ = ["Net", "__version__", "convert", "demo", "synthesize"]
