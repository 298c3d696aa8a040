"""The vidray model zoo: every architecture of the papers behind one registry.

>>> from vidray.models import list_models, create_model
>>> model = create_model("gru_rcn", num_classes=5, backbone="tiny")

Each family lives in its own module and registers its builders on import.
"""

from vidray.models._registry import (
    ModelInfo,
    create_model,
    get_model_builder,
    list_models,
    model_info,
    register_model,
)

# Importing a family module registers its builders.
from vidray.models import (  # noqa: E402,F401  (import for side effect: registration)
    backbones,
    gru_rcn,
    rcnn,
    pooling,
    actionflownet,
    tdn,
)

__all__ = ["ModelInfo", "create_model", "get_model_builder", "list_models", "model_info", "register_model"]
