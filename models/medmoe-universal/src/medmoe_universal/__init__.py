"""The medmoe model ``medmoe-universal`` 1.0.0: its files are in this folder; see MODEL_CARD.md.

Load it with ``medmoe.api.Detector.load('medmoe-universal')`` or ``medmoe detect --model medmoe-universal``.
"""

__version__ = "1.0.0"
