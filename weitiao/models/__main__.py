"""`python -m weitiao.models --prepare`: convert the bundled models into weitiao's cache (make install runs it)."""

import sys

if sys.argv[1:] != ["--prepare"]:
    sys.exit("usage: python -m weitiao.models --prepare   (convert the bundled models into weitiao's cache)")
from weitiao.models import prepare_bundled

prepare_bundled()
