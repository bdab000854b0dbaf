"""A DICOM node a PACS can talk to (``medmoe listen``): a Storage SCP that scores the images it receives
(:mod:`medmoe.node.scp`) and sends each result's SR and Parametric Map (or overlay) on to a destination,
keeping them on disk until it has taken them (:mod:`medmoe.node.outbox`)."""
