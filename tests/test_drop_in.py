"""Drop-in use, as the README shows it: a user's own classification LightningModule and DataModule, no lnas base class,
searched by the lnas callbacks in a plain Trainer; the user's own module then trains the pick."""

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lnas.callbacks import HardwareLatency, ZeroShotSearch
from lnas.hardware import OrtLatencyEstimator
from lnas.predictors import SynFlow
from lnas.spaces import MBConvSpace


class ColourData(L.LightningDataModule):
    """Images whose class is the channel with the largest mean (learnable in a few steps)."""

    def __init__(self, count: int = 96) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.labels = torch.randint(0, 3, (count,), generator=generator)
        self.images = torch.rand(count, 3, 32, 32, generator=generator) * 0.5
        self.images[torch.arange(count), self.labels] += 0.5

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(self.images, self.labels), batch_size=16, shuffle=True)


class PooledClassifier(nn.Module):
    def __init__(self, backbone: nn.Module, channels: int, classes: int) -> None:
        super().__init__()
        self.backbone, self.fc = backbone, nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.backbone(x)[-1].mean((2, 3)))


class MySupernetClassifier(L.LightningModule):
    """The user's module: a space's supernet as backbone, one random arch per step, and the two hooks lnas reads."""

    def __init__(self, space: MBConvSpace, classes: int = 3) -> None:
        super().__init__()
        self.space = space
        self.net = PooledClassifier(space.supernet(), space.feature_info()[-1].num_chs, classes)

    def training_step(self, batch, index):
        self.net.backbone.activate(self.space.sample(torch.Generator().manual_seed(self.global_step)))
        images, labels = batch
        return F.cross_entropy(self.net(images), labels)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)

    def candidate(self, arch, inherit: bool = True, seed: int = 0) -> nn.Module:
        backbone = self.net.backbone.extract(arch) if inherit else self.space.build(arch)
        model = PooledClassifier(backbone, self.space.feature_info(arch)[-1].num_chs, self.net.fc.out_features)
        model.fc.load_state_dict(self.net.fc.state_dict())
        return model


class MyClassifier(L.LightningModule):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.losses = model, []

    def training_step(self, batch, index):
        images, labels = batch
        loss = F.cross_entropy(self.model(images), labels)
        self.losses.append(loss.item())
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def _trainer(epochs: int, callbacks=()) -> L.Trainer:
    return L.Trainer(max_epochs=epochs, callbacks=list(callbacks), logger=False, enable_progress_bar=False, enable_model_summary=False,
                     enable_checkpointing=False)


def test_a_users_own_classification_modules_search_and_train_the_pick(tmp_path):
    L.seed_everything(0)
    space = MBConvSpace(stages=[{"channels": c, "stride": 2, "depths": [1, 2]} for c in (16, 24, 32)], stem_channels=8, out_indices=[2])
    module, data = MySupernetClassifier(space), ColourData()
    search = ZeroShotSearch(SynFlow(), num_candidates=5, output_dir=str(tmp_path))
    latency = HardwareLatency({"cpu": {"estimator": OrtLatencyEstimator(warmup=1, runs=3, repeats=2)}})
    _trainer(1, [search, latency]).fit(module, datamodule=data)
    assert search.chosen is not None and len(search.leaderboard) == 5 and (tmp_path / "leaderboard.csv").exists()
    assert space.encode(search.chosen) == search.picks["cpu"].arch

    final = MyClassifier(module.candidate(search.chosen, inherit=False))  # the pick, trained from scratch by the user's module
    _trainer(6).fit(final, datamodule=data)
    first, last = sum(final.losses[:6]) / 6, sum(final.losses[-6:]) / 6  # the first and the last epoch
    assert last < 0.5 * first, f"the pick did not learn: mean loss {first:.3f} -> {last:.3f}"
