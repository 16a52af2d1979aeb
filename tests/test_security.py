"""Loading files never runs code from them, and no config value reaches a shell.

A malicious pickle here creates a marker file when it is unpickled. Each test first shows that the payload does
run under a plain, trusting load, then that psvit refuses the file and the marker never appears.
"""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import psvit
from psvit.data import build_splits
from psvit.errors import CheckpointError, DataError

PACKAGE = Path(psvit.__file__).parent


class Payload:
    """Unpickling this creates ``marker``: what an attacker's code would do instead."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def write_malicious(path: Path, content: object) -> Path:
    """``content`` saved with torch.save (a zip holding a pickle)."""
    torch.save(content, path)
    return path


def test_payload_runs_under_a_trusting_load(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = write_malicious(tmp_path / "evil.pt", {"state_dict": {}, "args": Payload(marker)})
    torch.load(path, weights_only=False)
    assert marker.exists()  # the payload is real: the tests below would see it run


def test_malicious_checkpoint_is_refused_by_the_cli(run_cli, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = write_malicious(tmp_path / "evil.pt", {"state_dict": {"w": torch.zeros(1)}, "args": Payload(marker)})
    result = run_cli("train", f"model.checkpoint={path}", f"cache_dir={tmp_path}/cache", check=False)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "pickles Python objects" in lines[0] and "model.trust_pickle=true" in lines[0]
    assert not marker.exists() and not (tmp_path / "cache").exists()


def test_malicious_psvit_checkpoint_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    model = psvit.create_model(
        "spikformer",
        variant="cifar",
        img_size=16,
        embed_dim=16,
        num_heads=2,
        depth=1,
        T=2,
        in_channels=1,
        num_classes=10,
    )
    path = psvit.save(model, tmp_path / "model.pt", meta={"note": "fine"})
    payload = torch.load(path, weights_only=True)
    payload["meta"]["note"] = Payload(marker)
    write_malicious(path, payload)
    with pytest.raises(CheckpointError, match="pickles Python objects"):
        psvit.load(path)
    assert not marker.exists()


def test_malicious_cifar_batch_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    batch = {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 0, 1]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (tmp_path / name).write_bytes(pickle.dumps(batch))
    (tmp_path / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b"], b"x": Payload(marker)}))
    pickle.loads((tmp_path / "batches.meta").read_bytes())
    assert marker.exists()  # the payload is real
    marker.unlink()
    with pytest.raises(DataError, match=r"batches.meta: unreadable CIFAR pickle \(refused to load \w+\.open\)"):
        build_splits("cifar10", root=tmp_path)
    assert not marker.exists()


def calls(tree: ast.AST) -> list[tuple[str, ast.Call]]:
    """Every call in ``tree`` with its dotted callee name (``torch.load``, ``eval``; ``?.eval`` for a method
    called on an expression, such as ``model.cpu().eval()``)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, func = [], node.func
            while isinstance(func, ast.Attribute):
                parts.append(func.attr)
                func = func.value
            parts.append(func.id if isinstance(func, ast.Name) else "?")  # "?": called on an expression
            found.append((".".join(reversed(parts)), node))
    return found


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=[str(p.relative_to(PACKAGE)) for p in SOURCES])
def test_loads_are_weights_only_and_nothing_reaches_a_shell(path: Path) -> None:
    tree = ast.parse(path.read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    } | {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not imported & {"subprocess", "pty", "shlex"}, "psvit runs no external command"
    for name, call in calls(tree):
        assert name not in {"os.system", "os.popen", "eval", "exec", "pickle.load", "pickle.loads"}, name
        assert not name.startswith(("os.exec", "os.spawn")), name
        if name == "torch.load":
            weights_only = {k.arg: k.value for k in call.keywords}.get("weights_only")
            assert weights_only is not None, f"{path}: torch.load without weights_only"
            text = ast.unparse(weights_only)
            assert text in ("True", "not trust_pickle"), f"{path}: torch.load(weights_only={text})"
