"""The package's shape: the inference path never loads the offline tools, `import
neucomp` stays cheap, and no module imports another that imports it back."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "neucomp"
OFFLINE = ("neucomp.train", "neucomp.data", "neucomp.eval", "neucomp.demo")

_RUN_INFERENCE = """
import json, sys
import numpy as np
import neucomp
assert "torch" not in sys.modules, "import neucomp loaded torch"
import neucomp.cli, neucomp.api, neucomp.batch
audio = np.sin(np.arange(24000, dtype=np.float32) / 10)
for lm in (False, True):
    neucomp.decompress(neucomp.compress(audio, 24000, 3.0, lm=lm))
print(json.dumps(sorted(m for m in sys.modules if m.startswith("neucomp"))))
"""


def test_inference_path_never_imports_offline_tools() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _RUN_INFERENCE],
        capture_output=True,
        text=True,
        check=True,
        cwd=PACKAGE.parent,
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "neucomp.cli" in loaded
    offline = [m for m in loaded if m.startswith(OFFLINE)]
    assert not offline, f"the inference path loaded {offline}"
