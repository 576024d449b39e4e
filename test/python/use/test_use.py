"""Using a run's adapter: a missing or unreadable adapter file is refused (InputError naming it) before a model loads."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from oplora.run.runner import InputError
from oplora.use import adapter_file
from safetensors.torch import save_file


@pytest.mark.parametrize("task", ["text_to_image", "llava"])
def test_adapter_file_refuses_a_truncated_or_pickled_file(tmp_path: Path, task: str) -> None:
    from oplora.use import ADAPTER_FILES

    f = tmp_path / ADAPTER_FILES[task]
    with pytest.raises(InputError, match="missing"):
        adapter_file(tmp_path, task)
    f.parent.mkdir(parents=True)
    save_file({"w": torch.zeros(4, 4)}, str(f))
    assert adapter_file(tmp_path, task) == f
    f.write_bytes(f.read_bytes()[:40])  # a copy that stopped part-way
    with pytest.raises(InputError, match=rf"{f}: not a readable safetensors file"):
        adapter_file(tmp_path, task)
    torch.save({"w": torch.zeros(2)}, f)  # a pickled .bin under the safetensors name
    with pytest.raises(InputError, match=rf"{f}: not a readable safetensors file"):
        adapter_file(tmp_path, task)
