"""lnas's Hydra configs (package data). Importing it registers two resolvers:

- ``${lnas_data:<path>}``: ``<path>`` under the shared benchmark data folder (:func:`lnas.io.data_dir`: ``$LNAS_DATA_DIR``,
  default ``../shared/data`` beside the checkout);
- ``${lnas_resolutions:<image size>,[<fractions>]}``: input resolutions as fractions of the data's image size, rounded to
  multiples of 8 (e.g. ``128, [0.75, 0.875, 1.0]`` gives ``[96, 112, 128]``), so one space config serves every data size.
"""

from omegaconf import OmegaConf

from lnas.io import data_dir


def resolutions(image_size: int | None, fractions: list[float]) -> list[int] | None:
    """``fractions`` of ``image_size``, each rounded to a multiple of 8 (at least 8), without repeats; None without an
    image size (the data module then reports what is missing)."""
    if image_size is None:
        return None
    values = [max(8, round(image_size * float(f) / 8) * 8) for f in fractions]
    return sorted(set(values))


OmegaConf.register_new_resolver("lnas_data", lambda path="": str(data_dir() / path), replace=True)
OmegaConf.register_new_resolver("lnas_resolutions", resolutions, replace=True)
