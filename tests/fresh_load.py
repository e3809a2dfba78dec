"""Run in a fresh process: load a checkpoint with pickle disabled and write its logits.

Usage: python tests/fresh_load.py FOLDER OUT.safetensors {quantkit|stock}
"""

from __future__ import annotations

import pickle
import sys


def _no_pickle(*args, **kwargs):
    raise AssertionError("a pickle was loaded from a checkpoint")


def main(folder: str, out: str, loader: str) -> None:
    import torch

    pickle.load = pickle.loads = _no_pickle
    torch.load = _no_pickle
    from safetensors.torch import save_file

    from quantkit.testing import logits

    if loader == "quantkit":
        import quantkit as qk

        model = qk.load(folder)
    else:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True).eval()
    save_file({"logits": logits(model)}, out)


if __name__ == "__main__":
    main(*sys.argv[1:4])
