"""The task interface: heads, losses, metrics and export for every task, on every weight-sharing space, and the timm baseline."""

import pytest
import torch

from lnas.data import SyntheticClassificationDataModule, SyntheticDetectionDataModule, SyntheticSegmentationDataModule
from lnas.hardware import check_onnx_matches, export_onnx
from lnas.spaces import MBConvSpace
from lnas.spaces.nb201 import NB201Space
from lnas.tasks import ClassificationTask, DetectionTask, SegmentationTask, SupernetModule
from lnas.tasks.baseline import BaselineError, timm_baseline

TASKS = {
    "classification": (lambda: ClassificationTask(3, head_width=16), lambda: SyntheticClassificationDataModule(image_size=64, num_train=8, num_val=4,
                                                                                                               num_test=4, batch_size=4)),
    "detection": (lambda: DetectionTask(3, head_width=16, tower_depth=1), lambda: SyntheticDetectionDataModule(image_size=64, num_train=8, num_val=4,
                                                                                                                num_test=4, batch_size=4)),
    "segmentation": (lambda: SegmentationTask(4, head_width=16), lambda: SyntheticSegmentationDataModule(image_size=64, num_train=8, num_val=4,
                                                                                                          num_test=4, batch_size=4)),
}
SPACES = {
    "mbconv": lambda: MBConvSpace(stages=[{"channels": c, "stride": 2, "depths": [1, 2]} for c in (16, 24, 32, 40)], stem_channels=8,
                                  widths=[0.5, 1.0], block_types=["mbconv", "repvgg"], resolutions=[48, 64]),
    "nb201": lambda: NB201Space(channels=4, cells_per_stage=1),
}


def _batch(name: str):
    datamodule = TASKS[name][1]()
    datamodule.setup()
    return next(iter(datamodule.train_dataloader()))


@pytest.mark.parametrize("space_name", sorted(SPACES))
@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_every_task_trains_evaluates_and_exports_on_every_space(task_name, space_name, tmp_path):
    space, task = SPACES[space_name](), TASKS[task_name][0]()
    images, targets = _batch(task_name)
    module = SupernetModule(space, task)
    generator = torch.Generator().manual_seed(0)
    module.activate(space.sample(generator))
    losses = task.loss(module(images), targets, images, module.net)
    losses["loss"].backward()
    assert torch.isfinite(losses["loss"]) and any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.supernet.parameters())

    module.eval()
    arch = space.sample(generator)
    module.activate(arch)
    candidate = module.candidate(arch, inherit=True).eval()
    with torch.no_grad():
        expected, got = module(images), candidate(images)
    for a, b in zip(expected if isinstance(expected, tuple) else [expected], got if isinstance(got, tuple) else [got], strict=True):
        assert torch.allclose(a, b, atol=1e-4), "an inherited candidate computes what the supernet computes for its arch"
    metrics = task.metrics()
    task.update_metrics(metrics, got, targets, images, candidate)
    values = task.compute_metrics(metrics)
    assert task.primary_metric in values and 0.0 <= float(values[task.primary_metric]) <= 1.0
    path = export_onnx(candidate, tuple(images.shape[1:]), tmp_path / "candidate.onnx")
    assert check_onnx_matches(candidate, path, images[:2]) < 1e-3


def test_task_outputs_have_the_documented_shapes():
    space = SPACES["mbconv"]()
    arch = space.decode("r48-w0.5k3e3-w1rep-w0.5k5e6-w1k3e3")
    images = torch.rand(2, 3, 64, 64)
    for task, shape in ((ClassificationTask(10), (2, 10)), (SegmentationTask(4), (2, 4, 64, 64))):
        out = SupernetModule(space, task).candidate(arch, inherit=False)(images)
        assert tuple(out.shape) == shape
    cls, box, ctr = SupernetModule(space, DetectionTask(3)).candidate(arch, inherit=False)(images)
    assert cls.shape[-1] == 3 and box.shape[-1] == 4 and ctr.shape == cls.shape[:2]


def test_classification_reports_top1_and_top5():
    task = ClassificationTask(10)
    metrics = task.metrics()
    logits = torch.eye(10)[:4] * 5 + torch.arange(10, 0, -1) * 0.01  # ranks: the diagonal class, then 0, 1, 2, ...
    task.update_metrics(metrics, logits, torch.tensor([0, 1, 3, 3]), torch.zeros(4, 3, 8, 8), None)
    values = task.compute_metrics(metrics)
    assert float(values["top1"]) == pytest.approx(0.75) and float(values["top5"]) == pytest.approx(1.0)


def test_segmentation_ignores_the_ignore_index_and_scores_perfect_masks_one():
    task = SegmentationTask(3)
    masks = torch.randint(0, 3, (2, 8, 8))
    masks[:, 0] = 255
    logits = torch.nn.functional.one_hot(masks.clamp(max=2), 3).permute(0, 3, 1, 2).float() * 10
    logits[:, :, 0] = torch.randn(2, 3, 8)  # wrong where ignored
    metrics = task.metrics()
    task.update_metrics(metrics, logits, masks, torch.zeros(2, 3, 8, 8), None)
    assert float(task.compute_metrics(metrics)["miou"]) == pytest.approx(1.0)
    assert torch.isfinite(task.loss(logits, masks, None, None)["loss"])


def test_nb201_supernet_extracts_the_cell_it_computes():
    space = NB201Space(channels=4, cells_per_stage=2)
    supernet = space.supernet().eval()
    x = torch.randn(2, 3, 16, 16)
    for seed in range(3):
        arch = space.sample(torch.Generator().manual_seed(seed))
        supernet.activate(arch)
        net = supernet.extract(arch).eval()
        for a, b in zip(supernet(x), net(x), strict=True):
            assert torch.allclose(a, b, atol=1e-5)
    assert [info.reduction for info in space.feature_info()] == [1, 2, 4]


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_timm_baseline_builds_for_every_task(task_name):
    task = TASKS[task_name][0]()
    model = timm_baseline("resnet18", task, (3, 64, 64), num_levels=3)
    out = model(torch.rand(1, 3, 64, 64))
    assert (out[0] if isinstance(out, tuple) else out).shape[0] == 1
    assert [unit[0].in_channels for unit in model.head.laterals.units] == ([512] if task_name == "classification" else [128, 256, 512])


def test_timm_baseline_errors_name_close_models_and_the_reason():
    with pytest.raises(BaselineError, match=r"unknown timm model 'resnet181'.*'resnet18'"):
        timm_baseline("resnet181", ClassificationTask(10), (3, 32, 32), num_levels=3)
    with pytest.raises(BaselineError, match="distinct scales"):
        timm_baseline("vit_tiny_patch16_224", DetectionTask(3), (3, 224, 224), num_levels=3)
