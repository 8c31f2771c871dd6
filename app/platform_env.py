"""Fit the process environment to how hospital AI platforms start the MAP.

mercure runs a module container as the host's mercure user (``--user uid:gid``),
whose UID has no entry in the image's ``/etc/passwd`` and whose ``HOME`` (``/``)
is not writable; MONAI Deploy platforms may do the same. Two imports then fail:

* MONAI reads the user name at import (``getpass.getuser()``), which raises
  ``KeyError: getpwuid(): uid not found``;
* CuPy creates its kernel cache under ``~/.cupy`` at import (``PermissionError``).

:func:`prepare_platform_environment` gives such a process a user name (``USER``)
and, when ``HOME`` is not writable, a private temporary ``HOME`` for caches, before
anything imports those libraries. Nothing is changed for a normal user.
"""

from __future__ import annotations

import os
import pwd
import tempfile

_NAME_VARIABLES = ("LOGNAME", "USER", "LNAME", "USERNAME")


def prepare_platform_environment() -> None:
    """Set ``USER`` for a UID without passwd entry, and ``HOME`` when it is not writable."""
    if not any(os.environ.get(v) for v in _NAME_VARIABLES):
        try:
            pwd.getpwuid(os.getuid())
        except KeyError:
            os.environ["USER"] = f"uid{os.getuid()}"
    home = os.environ.get("HOME") or os.path.expanduser("~")
    if not (os.path.isdir(home) and os.access(home, os.W_OK | os.X_OK)):
        os.environ["HOME"] = tempfile.mkdtemp(prefix="tsc-home-")
