"""E21: the same 48 kHz networks and envelope coder, another split of a bandwidth's
codebooks between the envelope and the learned RVQ (`envelope_layout`).

    python scripts/e21/layout.py MODEL OUT_DIR NAME=LAYOUT...

writes OUT_DIR/NAME.pt per layout (32 letters e/l; 'default' alternates); score each
with `neucomp eval … --model OUT_DIR/NAME.pt`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from neucomp.registry import load_model, save_model


def main(model: str, out_dir: str, specs: list[str]) -> None:
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for spec in specs:
        name, layout = spec.split("=")
        codec = load_model(model, cached=False)
        codec.config.envelope_layout = "" if layout == "default" else layout
        codec.config.check()
        path = Path(out_dir) / f"{name}.pt"
        print(name, layout, save_model(codec, path)[:12], path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
