"""Recipe keys every training stage shares for publishing its result, and the one rule for
reading ``HF_HUB_OFFLINE``."""

from __future__ import annotations

import os
from dataclasses import dataclass

from nlp_ssl.errors import ConfigError


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` read as ``huggingface_hub`` reads it (1, ON, YES, TRUE)."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


@dataclass(kw_only=True)
class HubOptions:
    """Recipe keys shared by every training stage: push the result to the Hub at the end."""

    push_to_hub: bool = False
    """After the run: export it (model card included) and push it as one commit."""
    hub_model_id: str | None = None
    """NAMESPACE/NAME of the Hub repo (created if missing)."""
    hub_private: bool = False
    hub_checkpoint_branch: str | None = None
    """Also push every checkpoint, to this branch, tagged ``step-N`` (e.g. ``checkpoints``)."""

    def check_hub_options(self) -> None:
        if (self.push_to_hub or self.hub_checkpoint_branch) and not self.hub_model_id:
            raise ConfigError("'push_to_hub' and 'hub_checkpoint_branch' need 'hub_model_id' (NAMESPACE/NAME)")
        if self.hub_model_id is not None and (
            self.hub_model_id.count("/") != 1 or not all(self.hub_model_id.split("/"))
        ):
            raise ConfigError(f"'hub_model_id' must be NAMESPACE/NAME, got {self.hub_model_id!r}")

    @property
    def pushes(self) -> bool:
        return self.push_to_hub or self.hub_checkpoint_branch is not None
