"""Releasing a trained model: its model card (:mod:`~medmoe.release.card`) and its installable package
(:mod:`~medmoe.release.package`, ``medmoe package``)."""
