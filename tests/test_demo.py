"""`alertbot demo` on a machine with nothing configured: it must run the whole pipeline and exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.test_config import SETTING_NAMES


def test_demo_runs_the_pipeline_and_exits_0(tmp_path: Path) -> None:
    # No settings at all, and a working folder without .env: the demo must need none.
    env = {k: v for k, v in os.environ.items() if k not in SETTING_NAMES}
    result = subprocess.run(
        [sys.executable, "-m", "bot", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "Alice │ /start" in out and "Welcome to Token Alert Bot, Alice!" in out
    assert "min_mcap" in out  # the /set and /filters exchange
    # Buttons are shown and pressed: the menu, the Filters screen, the value flow.
    assert "[🎯 Filters]  [📦 Presets]" in out and "Alice │ presses [Min win rate]" in out
    assert "[Min win rate: 40%]" in out and "• min_win_rate = 40%" in out
    # Exactly the alerts the three demo subscribers' filters pass on the bundled feed.
    assert "alerts to Whale Watcher    : 6" in out
    assert "alerts to Consensus Trader : 8" in out
    assert "alerts to Quality Hunter   : 7" in out
    # The recording's 1,492 frames, then six price frames: three alerted tokens run up, and their
    # subscribers get follow-ups, each a reply to their alert.
    assert "frames read        : 1,498" in out and "frame → sender     : p50" in out
    assert "Later that day" in out and "since your alert" in out and "↩ " in out
    assert "demo finished." in out
