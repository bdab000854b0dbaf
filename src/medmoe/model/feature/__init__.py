"""The feature family: the paper's experts on a frozen pretrained trunk, and what it needs.

- :mod:`~medmoe.model.feature.network`: ``feature_moe``, the default architecture;
- :mod:`~medmoe.model.feature.experts`: its shared encoder and expert bank;
- :mod:`~medmoe.model.feature.branch`: one scoring branch (error, temperature, Eq. 5 map, retrieval), used by
  the network and by an added task's adapter alike;
- :mod:`~medmoe.model.feature.adapter` and :mod:`~medmoe.model.feature.grow`: tasks added to a trained
  network from a few normals (``AnomalyModel.grow``);
- :mod:`~medmoe.model.feature.trunk`: the frozen EfficientNet-Lite trunk (shared with the PatchCore and
  1-NN peers and the scope head); :mod:`~medmoe.model.feature.memory`: patch memories.
"""
