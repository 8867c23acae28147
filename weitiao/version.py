"""weitiao's version, at the bottom of the house: anything may import it (the package's own
`weitiao/__init__` is the Python API's face, above everything)."""

__version__ = "0.1.0"
