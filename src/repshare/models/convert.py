"""Convert EfficientNet checkpoints with other key names to timm's, and save them as safetensors.

    python -m repshare.models.convert IN.pth OUT.safetensors [--arch tf_efficientnet_b0]

Handles the ``efficientnet_pytorch`` (lukemelas) layout common in the wild: ``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` / ``_depthwise_conv`` / ``_se_reduce`` / ``_project_conv``, ``_conv_head``,
``_bn1``, ``_fc``. Those weights are ports of the TensorFlow models ('same' padding, BatchNorm eps
1e-3), so they load into timm's ``tf_efficientnet_bN`` (not ``efficientnet_bN``). The flat block index
N is split into timm's (stage, block) by the blocks' output channels (every EfficientNet stage has its
own width). A file already in timm keys is passed through. With ``--arch`` the result is loaded
strictly into that timm model first, so a wrong architecture or class count fails here, by name.
Then use it with ``model.classifier.checkpoint_path=OUT.safetensors model.classifier.arch=<arch>``.
The input is read without unpickling code (safetensors, or torch with ``weights_only=True``).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import torch

TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
# Per block: inverted residual (has an expansion conv) vs depthwise-separable (expansion ratio 1).
INVERTED_RESIDUAL = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
                     "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand", "_project_conv": "conv_pwl",
                     "_bn2": "bn3"}
DEPTHWISE_SEPARABLE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_se_reduce": "se.conv_reduce",
                       "_se_expand": "se.conv_expand", "_project_conv": "conv_pw", "_bn2": "bn2"}
BLOCK_KEY = re.compile(r"^_blocks\.(\d+)\.(_[a-z0-9_]+)\.(.+)$")


def is_efficientnet_pytorch(state: dict[str, torch.Tensor]) -> bool:
    return any(k.startswith(("_conv_stem.", "_blocks.")) for k in state)


def block_positions(state: dict[str, torch.Tensor]) -> dict[int, tuple[int, int]]:
    """Flat block index -> (stage, index in stage): a new stage starts where the output width changes."""
    blocks = sorted({int(m.group(1)) for k in state if (m := BLOCK_KEY.match(k))})
    if blocks != list(range(len(blocks))):
        raise ValueError(f"block indices are not 0..{len(blocks) - 1}: {blocks[:5]}...")
    out, stage, pos, prev = {}, -1, 0, None
    for n in blocks:
        key = f"_blocks.{n}._project_conv.weight"
        if key not in state:
            raise ValueError(f"missing {key}: not an efficientnet_pytorch EfficientNet checkpoint")
        width = state[key].shape[0]
        if width != prev:
            stage, pos, prev = stage + 1, 0, width
        out[n] = (stage, pos)
        pos += 1
    return out


def convert_efficientnet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """efficientnet_pytorch key names -> timm's; a state dict already in timm keys comes back unchanged."""
    if not is_efficientnet_pytorch(state):
        return dict(state)
    where = block_positions(state)
    expanded = {int(m.group(1)) for k in state if (m := BLOCK_KEY.match(k)) and m.group(2) == "_expand_conv"}
    out = {}
    for key, value in state.items():
        m = BLOCK_KEY.match(key)
        if m:
            n, module, rest = int(m.group(1)), m.group(2), m.group(3)
            table = INVERTED_RESIDUAL if n in expanded else DEPTHWISE_SEPARABLE
            if module not in table:
                raise ValueError(f"unknown block module in key {key!r}")
            stage, pos = where[n]
            new = f"blocks.{stage}.{pos}.{table[module]}.{rest}"
        else:
            head, _, rest = key.partition(".")
            if head not in TOP_LEVEL:
                raise ValueError(f"unknown key {key!r} in an efficientnet_pytorch checkpoint")
            new = f"{TOP_LEVEL[head]}.{rest}"
        if new in out:
            raise ValueError(f"two keys map to {new!r}")
        out[new] = value
    return out


def convert_file(src: str | Path, dst: str | Path, arch: str | None = None) -> dict[str, torch.Tensor]:
    """Read ``src``, convert its keys, optionally check them against timm ``arch``, write safetensors ``dst``."""
    from safetensors.torch import save_file

    from repshare.models.checkpoint import load_state_file
    from repshare.utils.io import atomic_path

    state = convert_efficientnet_keys(load_state_file(src))
    if arch is not None:
        import timm

        from repshare.models.checkpoint import load_into

        fc = state.get("classifier.weight")
        if not timm.is_model(arch):
            raise ValueError(f"--arch {arch!r} is not a timm model name")
        model = timm.create_model(arch, num_classes=fc.shape[0] if fc is not None else 1000)
        probe = Path(dst).with_suffix(".check.safetensors")
        try:  # load_into reads files; write the candidate once and load it strictly
            save_file({k: v.contiguous() for k, v in state.items()}, str(probe))
            load_into(model, probe, f"timm {arch}")
        finally:
            probe.unlink(missing_ok=True)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
    return state


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m repshare.models.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="checkpoint to convert (.pth/.pt/.bin/.safetensors)")
    parser.add_argument("dst", help="output .safetensors file")
    parser.add_argument("--arch", default=None, help="timm model to check the result against, e.g. tf_efficientnet_b0")
    args = parser.parse_args(argv)
    try:
        state = convert_file(args.src, args.dst, args.arch)
    except (FileNotFoundError, ValueError) as err:
        print(f"error [convert]: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.dst}: {len(state)} tensors" + (f", loads into timm {args.arch}" if args.arch else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
