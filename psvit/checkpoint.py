"""Self-describing checkpoints: model name + resolved config (every width) + state_dict, in one file.

A quantized model (:mod:`psvit.quant`) is written in a second format, ``psvit-checkpoint/quantized-1``: instead
of the state_dict it holds its bit-widths and one shared buffer of float32 values and packed integer codes
(:mod:`psvit.quant.storage`), so the file is as small as the memory model says. :func:`load` reads both.

Files load with ``torch.load(path, weights_only=True)``: they hold only tensors, numbers, strings, lists and
dicts. They are written atomically (a temporary file in the same folder, then a rename), so a crash never
leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from psvit.errors import CheckpointError
from psvit.models import create_model
from psvit.models.spikingjelly_convert import to_psvit_layout
from psvit.quant import quantization
from psvit.quant.storage import pack_model, unpack_model

FORMAT = "psvit-checkpoint/1"
QUANTIZED_FORMAT = "psvit-checkpoint/quantized-1"


def payload_of(model: nn.Module, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """What :func:`save` writes for ``model``: float32 models keep their state_dict, quantized ones are packed."""
    payload = {"model": model.model_name, "config": dict(model.config), "meta": dict(meta or {})}
    if quantization(model):
        return {"format": QUANTIZED_FORMAT, **payload, **pack_model(model)}
    return {"format": FORMAT, **payload, "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}}


def save(model: nn.Module, path: str | os.PathLike, meta: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (a registered psvit model) and optional JSON-like ``meta`` to ``path`` atomically."""
    path = Path(path)
    payload = payload_of(model, meta)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # e.g. a full disk: the old file, if any, is untouched
            raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None
        raise
    return path


def read(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint's raw payload (``format``, ``model``, ``config``, ``state_dict``, ``meta``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise CheckpointError(f"not a readable checkpoint: {path} ({_why_unreadable(exc)})") from None
    if not isinstance(payload, dict) or payload.get("format") not in (FORMAT, QUANTIZED_FORMAT):
        raise CheckpointError(f"not a psvit checkpoint (no '{FORMAT}' marker): {path}")
    return payload


def _why_unreadable(exc: Exception) -> str:
    """Why ``torch.load`` failed, in a few words: a refused pickle, or a truncated or foreign file."""
    if "Unsupported global" in str(exc):  # torch's weights_only unpickler met a Python object
        return "it pickles Python objects, which weights_only loading refuses"
    return f"truncated, corrupt or not a PyTorch file: {type(exc).__name__}"


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the model stored at ``path`` (pruned or not) and load its weights; returns it in eval mode."""
    payload = read(path)
    model = create_model(payload["model"], **payload["config"])
    try:
        if payload["format"] == QUANTIZED_FORMAT:
            unpack_model(model, payload["quantization"], payload["data"], payload["sections"])
        else:
            model.load_state_dict(payload["state_dict"], strict=True)
    except (RuntimeError, ValueError, KeyError) as exc:
        first = str(exc).splitlines()[0]
        raise CheckpointError(f"checkpoint {path} does not match its own config: {first}") from None
    return model.to(device).eval()


#: ``model.weights`` choices: which state_dict of an official training checkpoint to take.
WEIGHT_CHOICES = ("auto", "ema", "raw")


def existing(path: str | os.PathLike) -> Path:
    """``path`` as a Path, or a one-line :class:`CheckpointError` if there is no such file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    return path


def read_official_state_dict(
    path: str | os.PathLike, *, trust_pickle: bool = False, weights: str = "auto"
) -> tuple[dict[str, torch.Tensor], str]:
    """Read a state_dict saved by the official Spikformer code (or any plain ``torch.save`` of one), and say
    which weights it is.

    Accepts a bare state_dict or a training checkpoint holding one under ``state_dict_ema`` (EMA weights),
    ``state_dict`` or ``model``; strips a DataParallel ``module.`` prefix. ``weights`` picks among them:
    ``"ema"``, ``"raw"`` (the non-EMA weights) or ``"auto"`` (EMA when present). Training checkpoints that pickle
    Python objects (such as timm's argparse ``args``) need ``trust_pickle=True``, which loads them with
    ``weights_only=False``: only do this for files you trust.
    """
    if weights not in WEIGHT_CHOICES:
        raise CheckpointError(f"model.weights must be one of {', '.join(WEIGHT_CHOICES)}, got {weights!r}")
    path = existing(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:
        why = _why_unreadable(exc)
        hint = "; if you trust the file, set model.trust_pickle=true" if why.startswith("it pickles") else ""
        raise CheckpointError(f"cannot read checkpoint {path} ({why}){hint}") from None
    keys = {
        "auto": ("state_dict_ema", "state_dict", "model"),
        "ema": ("state_dict_ema",),
        "raw": ("state_dict", "model"),
    }[weights]
    taken = "the bare state_dict"
    if isinstance(payload, dict) and any(
        isinstance(payload.get(k), dict) for k in ("state_dict_ema", "state_dict", "model")
    ):
        key = next((k for k in keys if isinstance(payload.get(k), dict)), None)
        if key is None:
            raise CheckpointError(
                f"{path} has no {weights.upper()} weights (model.weights={weights}); "
                f"it holds: {', '.join(k for k in payload if isinstance(payload[k], dict))}"
            )
        payload, taken = payload[key], ("EMA weights" if key == "state_dict_ema" else "non-EMA weights") + f" ({key!r})"
    elif weights == "ema":
        raise CheckpointError(f"{path} is a bare state_dict: it has no EMA weights (model.weights=ema)")
    if not isinstance(payload, dict) or not all(isinstance(v, torch.Tensor) for v in payload.values()):
        raise CheckpointError(f"no state_dict found in {path}")
    return {k.removeprefix("module."): v for k, v in payload.items()}, taken


def load_official_weights(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    trust_pickle: bool = False,
    weights: str = "auto",
    checkpoint_format: str = "auto",
) -> str:
    """Load an official-layout state_dict into ``model`` with ``strict=True`` (a mismatch is a one-line error);
    returns which weights were taken (see :func:`read_official_state_dict`).

    ``checkpoint_format="spikingjelly"`` converts spikingjelly 2.0's own Spikformer layout first
    (:mod:`psvit.models.spikingjelly_convert`); ``auto`` (the default) detects it from the keys.
    """
    state_dict, taken = read_official_state_dict(path, trust_pickle=trust_pickle, weights=weights)
    state_dict = to_psvit_layout(state_dict, model.model_name, model.config, checkpoint_format)
    mismatch = _mismatch(model.state_dict(), state_dict)
    if mismatch:
        raise CheckpointError(
            f"{path} does not fit the configured model: {mismatch}; check the model.* config "
            "(variant, embed_dim, depth, num_heads, ...) against the checkpoint's"
        )
    model.load_state_dict(state_dict, strict=True)
    return taken


def _mismatch(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> str:
    """How ``found`` differs from ``expected`` in keys and shapes, in one line with an example of each; '' if
    it does not."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    reshaped = [k for k in expected if k in found and found[k].shape != expected[k].shape]
    parts = [
        f"{len(missing)} missing keys (e.g. {missing[0]})" if missing else "",
        f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})" if unexpected else "",
        f"{len(reshaped)} tensors of another shape (e.g. {reshaped[0]}: {list(found[reshaped[0]].shape)} in the "
        f"file, {list(expected[reshaped[0]].shape)} in the model)"
        if reshaped
        else "",
    ]
    return ", ".join(p for p in parts if p)
