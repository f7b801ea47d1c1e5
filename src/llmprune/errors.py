"""User-facing errors.

Every problem caused by the user's input (unknown model family, impossible ratio,
missing data file, corrupt checkpoint, NaN statistics ...) is raised as
:class:`LlmpruneError` with a one-line message that names the problem and the fix.
The CLI prints ``error: <message>`` and exits with status 2 instead of a traceback.
"""

from __future__ import annotations


class LlmpruneError(Exception):
    """A problem with the user's input, reported as one line naming the fix."""
