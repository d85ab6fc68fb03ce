"""``python -m edgepipe.cli``: the same as the ``edgepipe`` command."""

from . import run

run()
