"""prunekit's progress bars, one style everywhere.

Text bars on stdout (the book renders a cell's stdout, and its build fails on stderr),
redrawn at most every 2 s, and 76 columns wide: the book's code column holds 80 characters
of its monospace font, and a wider bar runs off the page.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

COLUMNS = 76


def progress_bar(*, total, desc, enabled: bool = True, **options) -> tqdm:
    """A tqdm bar of ``total`` steps, in prunekit's style (``enabled=False``: silent)."""
    return tqdm(total=total, desc=desc, disable=not enabled, file=sys.stdout, leave=True,
                dynamic_ncols=False, ncols=COLUMNS, mininterval=2.0, **options)
