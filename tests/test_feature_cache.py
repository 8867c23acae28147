"""The frozen-feature cache: exact (same losses step for step), used only where it is exact, resumable."""

from __future__ import annotations

import pytest
from helpers import sst2_slice, tiny_bert, train_tiny


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cache")
    return tmp, tiny_bert(tmp / "bert", layers=3), *sst2_slice(tmp, 256, 64)


def train(base, name, strategy, **training):
    return train_tiny(base, name, strategy, **{"eval_every": 8, **training})


@pytest.mark.parametrize("strategy, frozen", [("head_only", 3), ({"freeze_bottom": 1}, 1), ({"method": "train_top", "layers": 1}, 2)])
def test_cached_and_uncached_training_give_the_same_losses_step_for_step(base, strategy, frozen):
    _, cached = train(base, "cached", strategy)
    _, plain = train(base, "plain", strategy, feature_cache=False)
    report = next(r["feature_cache"] for r in cached if "feature_cache" in r)
    assert report["frozen_layers"] == frozen and report["of_layers"] == 3 and not report["memory_mapped"]
    # head_only on BERT: the pooler reads token 0 only, so one vector per example is kept (256 + 64 rows x 32 floats)
    assert report["first_token_only"] == (frozen == 3)
    if frozen == 3:
        assert report["megabytes"] == round(320 * 32 * 4 / 2**20, 1)
    assert not any("feature_cache" in r for r in plain)
    a = [r["loss"] for r in cached if "loss" in r]
    b = [r["loss"] for r in plain if "loss" in r]
    assert len(a) == len(b) == 16
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-5
    assert a[-1] != a[0]  # it trained
    ea = [r["eval"]["loss"] for r in cached if "eval" in r]
    eb = [r["eval"]["loss"] for r in plain if "eval" in r]
    assert max(abs(x - y) for x, y in zip(ea, eb)) < 1e-5  # validation also runs on cached features


def test_large_caches_go_to_a_memory_mapped_file(base):
    run, records = train(base, "mapped", "head_only", feature_cache_memory_gb=0.0, max_steps=4)
    report = next(r["feature_cache"] for r in records if "feature_cache" in r)
    assert report["memory_mapped"] and (run / "feature_cache_train.npy").is_file()
    _, plain = train(base, "mapped-plain", "head_only", feature_cache=False, max_steps=4)
    assert [round(r["loss"], 5) for r in records if "loss" in r] == [round(r["loss"], 5) for r in plain if "loss" in r]


@pytest.mark.parametrize("strategy, k", [("full", 0), ("lora", 0), ("adapter", 0), ({"method": "freeze_bottom", "layers": 0}, 0),
                                         ({"method": "freeze_bottom", "layers": 2}, 2), ("head_only", 3),
                                         ({"method": "train_top", "layers": 1, "include": ["embeddings"]}, 0)])
def test_the_cache_applies_only_to_a_frozen_bottom(base, strategy, k):
    from weitiao.config import StrategyConfig
    from weitiao.strategies import apply_strategy
    from weitiao.tasks.classification import build_model
    from weitiao.train.feature_cache import frozen_bottom

    model, _ = build_model(str(base[1]), ["a", "b"], False)
    spec = StrategyConfig.model_validate({"method": strategy} if isinstance(strategy, str) else strategy)
    assert frozen_bottom(apply_strategy(model, spec).model) == k
