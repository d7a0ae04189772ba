"""examples/monai_unet.py: MONAI's U-Net as a task module, in a short simulated federation.

MONAI is an optional extra (``medfed[monai]``); without it this file is skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import medfed
from medfed.config import config_from_dict
from medfed.data import load_dataset
from medfed.math.metrics import dice

pytest.importorskip("monai", reason="MONAI is the optional extra 'monai' (pip install monai)")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "monai_unet.py"


def test_the_monai_unet_task_learns_in_a_federation() -> None:
    options = {"image_size": 16, "num_images": 150}
    config = config_from_dict(
        {
            "rounds": 6,
            "seed": 0,
            "task": f"{EXAMPLE}:task",
            "data": {"name": "synthetic-segmentation", "sites": 2, "options": options},
            "train": {"optimizer": "adam", "learning_rate": 0.003, "local_epochs": 2},
            "evaluation": {"every": 6},
        }
    )
    result = medfed.simulate(config)
    final = result.history[-1].eval_summary
    assert final is not None and final.dice is not None
    ds = load_dataset("synthetic-segmentation", num_sites=2, options=options)
    y = np.concatenate([s.y_test for s in ds.sites])
    all_tumour = dice(labels=y, predicted=np.ones_like(y), n_classes=2)
    assert all_tumour is not None and final.dice > all_tumour + 0.2, (final.dice, all_tumour)
    # MONAI's Dice of the same predictions leaves out every image without a tumour
    # (ignore_empty); medfed's also counts a tumour found where there is none (as 0), so it
    # is never above MONAI's
    monai_dice = final.extra["monai_dice"]
    assert 0.0 < monai_dice <= 1.0
    for metrics in result.history[-1].eval_metrics.values():
        assert metrics.extra["monai_dice"] >= metrics.dice - 1e-6


def test_the_monai_task_builds_3d_models_and_refuses_other_kinds() -> None:
    from medfed.data.base import DataSpec, TaskKind
    from medfed.errors import TaskLoadError
    from medfed.site.task_loading import load_task

    task = load_task(f"{EXAMPLE}:task")
    spec = DataSpec(TaskKind.SEGMENTATION, (1, 8, 16, 16), n_classes=3)
    model = task.build_model(spec)  # the dry run checks (batch, 3, 8, 16, 16)
    assert sum(p.numel() for p in model.parameters()) > 0
    with pytest.raises(TaskLoadError, match="segmentation"):
        task.build_model(DataSpec(TaskKind.BINARY, (4,)))
