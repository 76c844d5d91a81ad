"""lnas's Hydra configs (package data). Importing it registers the resolver ``${lnas_data:<path>}``: ``<path>`` under the
shared benchmark data folder (:func:`lnas.io.data_dir`: ``$LNAS_DATA_DIR``, default ``../shared/data`` beside the checkout)."""

from omegaconf import OmegaConf

from lnas.io import data_dir

OmegaConf.register_new_resolver("lnas_data", lambda path="": str(data_dir() / path), replace=True)
