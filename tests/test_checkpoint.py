"""Checkpoints: written atomically, verified by checksum, pruned to the last K, safe across a crash."""

import errno
import json

import pytest
import torch

from weitiao.errors import TrainingStopped
from weitiao.train import checkpoint
from weitiao.train.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint, sha256, verify


def state(step: int) -> dict:
    return {"weight": torch.full((4, 3), float(step)), "rng": [step, step + 1]}


def test_save_writes_a_complete_verified_folder(tmp_path):
    folder = save_checkpoint(tmp_path, 5, state(5), {"step": 5, "epoch": 0}, keep=2)
    assert folder == tmp_path / "step-00000005"
    assert sorted(p.name for p in folder.iterdir()) == ["manifest.json", "meta.json", "state.pt"]
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000005"]  # no temporary folder left
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["step"] == 5
    assert manifest["files"] == {"meta.json": sha256(folder / "meta.json"), "state.pt": sha256(folder / "state.pt")}
    assert verify(folder)
    loaded, meta = load_checkpoint(folder)
    assert torch.equal(loaded["weight"], state(5)["weight"]) and loaded["rng"] == [5, 6]
    assert meta == {"step": 5, "epoch": 0}


def test_keep_last_k_prunes_older_checkpoints(tmp_path):
    for step in (10, 20, 30, 40, 50):
        save_checkpoint(tmp_path, step, state(step), {"step": step}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000040", "step-00000050"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000040", "step-00000050"]


def test_steps_sort_by_number_not_text(tmp_path):
    for step in (9, 100, 20):
        save_checkpoint(tmp_path, step, state(step), {}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000020", "step-00000100"]


def test_saving_the_same_step_again_replaces_it(tmp_path):
    save_checkpoint(tmp_path, 7, state(1), {}, keep=3)
    folder = save_checkpoint(tmp_path, 7, state(2), {}, keep=3)
    assert list_checkpoints(tmp_path) == [folder] and verify(folder)
    assert load_checkpoint(folder)[0]["weight"][0, 0].item() == 2.0


def test_a_changed_byte_fails_verification(tmp_path):
    folder = save_checkpoint(tmp_path, 1, state(1), {"step": 1}, keep=1)
    data = bytearray((folder / "state.pt").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder / "state.pt").write_bytes(bytes(data))
    assert not verify(folder)


@pytest.mark.parametrize("damage", ["delete state", "delete manifest", "garble manifest", "truncate meta"])
def test_a_damaged_checkpoint_fails_verification(tmp_path, damage):
    folder = save_checkpoint(tmp_path, 1, state(1), {"step": 1}, keep=1)
    if damage == "delete state":
        (folder / "state.pt").unlink()
    elif damage == "delete manifest":
        (folder / "manifest.json").unlink()
    elif damage == "garble manifest":
        (folder / "manifest.json").write_text("{not json")
    else:
        (folder / "meta.json").write_text("")
    assert not verify(folder)


def test_a_crash_while_writing_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    previous = save_checkpoint(tmp_path, 100, state(100), {"step": 100}, keep=2)
    before = {p.name: p.read_bytes() for p in previous.iterdir()}

    def crash(obj, path):
        path.write_bytes(b"half a tensor")  # the temporary folder now holds a partial file
        assert any(p.name.startswith(".tmp-step-00000200") for p in tmp_path.iterdir())
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.torch, "save", crash)
    with pytest.raises(TrainingStopped, match=r"step 200 \(the disk is full\); the previous checkpoint .*step-00000100 is intact"):
        save_checkpoint(tmp_path, 200, state(200), {"step": 200}, keep=1)

    assert list_checkpoints(tmp_path) == [previous]
    assert not (tmp_path / "step-00000200").exists()
    assert verify(previous)
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000100"]  # the partial write is cleaned up


def test_list_checkpoints_of_a_missing_folder_is_empty(tmp_path):
    assert list_checkpoints(tmp_path / "none") == []


class _RunsCode:
    """A pickle that runs a command when loaded (what a hostile state.pt would hold)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_crafted_state_pt_is_refused_and_runs_nothing(tmp_path):
    from weitiao.errors import UserError

    folder = save_checkpoint(tmp_path / "checkpoints", 3, state(3), {"step": 3}, keep=1)
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "payload": _RunsCode(marker)}, folder / "state.pt")
    # whoever crafted it can write a matching manifest too: the checksum proves nothing
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"]["state.pt"] = sha256(folder / "state.pt")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert verify(folder)
    with pytest.raises(UserError) as info:
        load_checkpoint(folder)
    assert info.value.field == "--resume" and "state.pt" in info.value.problem
    assert not marker.exists()


def test_the_loop_state_round_trips_with_weights_only(tmp_path):
    """Every random state the loop saves is a tensor or a plain value."""
    import random

    import numpy as np

    from weitiao.train.loop import _rng_state, _set_rng_state

    np.random.seed(7)
    random.seed(7)
    torch.manual_seed(7)
    folder = save_checkpoint(tmp_path, 1, {"rng": _rng_state()}, {}, keep=1)
    expected = (np.random.rand(3), random.random(), torch.rand(2))
    _set_rng_state(load_checkpoint(folder)[0]["rng"])
    assert np.array_equal(np.random.rand(3), expected[0]) and random.random() == expected[1] and torch.equal(torch.rand(2), expected[2])
