"""medmoe: universal unsupervised anomaly detection in medical images.

One network, trained on normal images only, screens chest X-rays, brain MRI, retinal fundus photos,
breast ultrasound and head CT. A short text prompt tells it what it is looking at; a router picks
specialised decoder experts, and each expert predicts where it is likely to hallucinate an anomaly
on normal anatomy so the anomaly map can discount those places.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

if TYPE_CHECKING:  # pragma: no cover
    from medmoe.api.detector import Detector

__all__ = ["Detector", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy: `import medmoe` stays cheap (no torch) until the Detector is asked for.
    if name == "Detector":
        from medmoe.api.detector import Detector

        return Detector
    raise AttributeError(f"module 'medmoe' has no attribute {name!r}")
