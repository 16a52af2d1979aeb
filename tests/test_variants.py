"""Named model variants (as in timm): ``psvit.create_model("<variant>")`` with the names of ``conf/model``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import psvit
from psvit.errors import ConfigError
from psvit.models import get_family, get_variant, list_models

CONF = Path(__file__).resolve().parents[1] / "conf" / "model"
#: Keys of conf/model/*.yaml that say where weights come from, or that the data fills in.
SOURCE_KEYS = {"name", "checkpoint", "trust_pickle", "weights", "checkpoint_format", "in_channels", "num_classes"}
VARIANTS = sorted(p.stem for p in CONF.glob("*.yaml"))
#: Families that tests/test_family.py registers when it is imported: in the same process (pytest collects every
#: file in each worker) list_models() names them too.
TEST_FAMILIES = {"toy_snn", "toy_snn_incomplete"}


def test_every_config_file_is_a_variant_and_back():
    assert VARIANTS and set(VARIANTS) == set(list_models()) - {"spikformer", "sdt"} - TEST_FAMILIES


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_equals_its_config_file(name):
    """The config file and the variant agree on every architecture key (an interpolated image size follows the
    data, whose default is the variant's), so the two definitions cannot drift apart."""
    yaml = OmegaConf.load(CONF / f"{name}.yaml")
    variant = get_variant(name)
    assert yaml.name == variant.family
    for key in set(yaml) - SOURCE_KEYS:
        expected = variant.data["img_size"] if OmegaConf.is_interpolation(yaml, key) else yaml[key]
        assert variant.config[key] == expected, key
    assert set(variant.config) == set(yaml) - SOURCE_KEYS
    resolved = get_family(variant.family).resolve_config(**variant.config, in_channels=3, num_classes=10)
    assert resolved["img_size"] == variant.data["img_size"]


@pytest.mark.parametrize("name", ["spikformer_tiny", "sdt_tiny", "spikformer_cifar"])
def test_create_model_by_variant_name_runs_at_its_data_size(name):
    variant = get_variant(name)
    model = psvit.create_model(name, in_channels=3, num_classes=7).eval()
    assert model.model_name == variant.family and model.config["num_classes"] == 7
    size = variant.data["img_size"]
    with torch.no_grad():
        assert model(torch.rand(2, 3, size, size)).shape == (2, 7)


def test_imagenet_variants_carry_imagenet_data_config():
    for name in ("spikformer_imagenet", "sdt_imagenet", "spikformer_sj_s"):
        data = get_variant(name).data
        assert data["img_size"] == 224 and len(data["mean"]) == len(data["std"]) == 3 and data["crop_pct"] == 0.875


def test_unknown_variant_is_a_one_line_error():
    with pytest.raises(ConfigError, match="unknown model 'spikformer_huge'.*spikformer_tiny"):
        psvit.create_model("spikformer_huge")
    with pytest.raises(ConfigError, match="unknown model variant"):
        get_variant("spikformer")
