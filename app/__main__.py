"""Command line: ``python -m app`` (MONAI Deploy convention) plus ``serve``, ``status`` and ``demo``.

``python -m app -i STUDY -o OUT -m MODELS [-c CONFIG] [-v]`` runs the operator graph
on one study folder, exactly as a MONAI Application Package does (the
``HOLOSCAN_INPUT_PATH`` / ``HOLOSCAN_OUTPUT_PATH`` / ``HOLOSCAN_MODEL_PATH``
variables stand in for missing options). Exit code 0 with results; 2 with a
one-line reason and a "not analysable" SR when the study cannot be analysed; 1
on a configuration or internal error.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Run as a folder (``python /opt/holoscan/app``, how a MAP starts it): make the
    # folder's parent importable so ``app`` is this package, and keep the folder
    # itself on the path for libraries the packager added next to it.
    _here = Path(__file__).resolve().parent
    sys.path[:1] = [str(_here.parent), str(_here)]
    __package__ = "app"  # noqa: A001

from app.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
