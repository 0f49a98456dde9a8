"""Helpers of benchmarks/bench_engine.py: the real server started from outside, fake backends, figures.

Nothing here imports the application except `imagetotext.images` (figure 7 and the direct
baselines): the server is driven only through HTTP, its WebSocket and management commands.
"""

import sys
from pathlib import Path

# The repository root, for `tests.fakes` and, in figure 7, `imagetotext.images`.
ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
