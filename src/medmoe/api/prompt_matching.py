"""Free-text prompts: embed any prompt and name the trained task it is closest to; DICOM task hints.

The model routes on the prompt's own embedding (the paper's design: the router sees the prompt, not a
task id), so a user may describe an image in their own words. The decision threshold, however, is a
property of a task (fitted on that task's validation normals), so every prompt is matched to the
trained task whose prompt embedding is nearest by cosine similarity (embeddings are unit vectors, so
it is their dot product), and that task's threshold is used.

**How close is close enough** (:data:`MIN_SIMILARITY` = 0.5). Measured with all-MiniLM-L6-v2 against
the five built-in task prompts (after abbreviation expansion):

=====================================  ==========  ==========
prompt                                 best task   similarity
=====================================  ==========  ==========
"breast ultrasound"                    breast_us   0.90
"CXR"                                  chest_xray  0.79
"eye fundus photograph"                fundus      0.76
"axial brain MRI"                      brain_mri   0.73
"non-contrast CT of the head"          head_ct     0.72
"chest radiograph"                     chest_xray  0.66
"fundus"                               fundus      0.56
"image"                                breast_us   0.45
"histopathology slide"                 breast_us   0.33
"photo of a cat"                       breast_us   0.32
"a red car", "pizza", "hello world"    —           ≤ 0.13
=====================================  ==========  ==========

Every sensible description of a trained task scored ≥ 0.55 and every unrelated or non-medical text
≤ 0.45, so 0.5 separates them. Similarity alone follows the modality words more than the organ, so
an *untrained* organ imaged with a trained modality passed it ("knee MRI" → brain_mri 0.53, "spine
MRI" → brain_mri 0.70, "abdominal CT" → head_ct 0.60); the vocabulary check
(:mod:`medmoe.text.vocabulary`) closes that: a prompt is confident only if every organ and modality
it names is one the matched task covers, and it names at least one ("medical image" names none). On
the 68-prompt labelled list in ``tests/integration/test_prompt_vocabulary.py`` (41 that should match a task, 27
that should not) precision and recall are both 1.00.

A prompt that is a trained task's own prompt matches it with similarity 1 and never runs the text
model: the cache is seeded with the embeddings stored in the checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from medmoe.api.spec import ModelSpec
from medmoe.errors import PromptError
from medmoe.tasks import Task, TaskRegistry
from medmoe.text.cache import PromptEmbeddingCache
from medmoe.text.prompts import encoder_text
from medmoe.text.vocabulary import vocabulary_problem

MIN_SIMILARITY = 0.5
"""Below this cosine similarity to the nearest task prompt, a prompt is reported as unrelated
(a warning, or :class:`~medmoe.errors.PromptError` in strict mode); see the module docstring."""


class PromptWarning(UserWarning):
    """A prompt resembles no trained task closely (``warnings.warn`` category)."""


@dataclass(frozen=True)
class PromptMatch:
    """A prompt and the trained task nearest to it.

    Attributes:
        prompt: the prompt as given.
        task: id of the nearest trained task (its threshold applies).
        similarity: cosine similarity of the prompt's embedding to that task's prompt embedding,
            in ``[-1, 1]`` (1: the task's own prompt).
        expanded_text: what the text model read (whitespace normalised, abbreviations expanded).
        vocabulary: why the prompt does not name what the task covers (an untrained organ or
            modality, or none at all; :mod:`medmoe.text.vocabulary`), or ``None``.
    """

    prompt: str
    task: str
    similarity: float
    expanded_text: str
    vocabulary: str | None = None

    @property
    def is_confident(self) -> bool:
        """Whether the similarity reaches :data:`MIN_SIMILARITY` and the prompt names only what the task covers."""
        return self.similarity >= MIN_SIMILARITY and self.vocabulary is None

    def warning(self) -> str:
        """The message for a weak match (see :data:`MIN_SIMILARITY` and :attr:`vocabulary`)."""
        if self.similarity >= MIN_SIMILARITY and self.vocabulary is not None:
            return (f"prompt {self.prompt!r} does not ask for a trained task: {self.vocabulary} (nearest task "
                    f"{self.task!r}, similarity {self.similarity:.2f}); the score is compared with that task's "
                    "threshold, so check the prompt (or pass a task id)")
        return (f"prompt {self.prompt!r} resembles no trained task closely: nearest is {self.task!r} with "
                f"similarity {self.similarity:.2f} < {MIN_SIMILARITY}; the score is compared with that task's "
                "threshold, so check the prompt (or pass a task id)")


class PromptMatcher:
    """Embeds prompts and matches them to the tasks of one model.

    Args:
        spec: the model's metadata (tasks, stored prompt embeddings, text encoder).

    Stored embeddings seed the cache, so a trained prompt never loads the text model. A model that
    does not route on prompts stores none; its task prompts are then embedded (once) when the first
    free-text prompt has to be matched.
    """

    def __init__(self, spec: ModelSpec) -> None:
        self.tasks = spec.tasks
        entries: dict[str, np.ndarray] = {}
        if spec.prompt_embeddings is not None:
            entries = {encoder_text(t.prompt): spec.prompt_embeddings[i] for i, t in enumerate(spec.tasks)}
        self.cache = PromptEmbeddingCache(spec.text_encoder, entries)
        self._task_embeddings = spec.prompt_embeddings

    def embed(self, prompt: str) -> np.ndarray:
        """The frozen embedding ``(D,)`` of a prompt.

        Raises:
            PromptError: the prompt is empty or not text.
        """
        return self.cache.embed([prompt])[0]

    def match(self, prompt: str) -> PromptMatch:
        """The trained task nearest to ``prompt`` (see :attr:`PromptMatch.is_confident`).

        Raises:
            PromptError: the prompt is empty or not text.
        """
        expanded = encoder_text(prompt)
        similarities = self.task_embeddings() @ self.embed(prompt)
        best = int(np.argmax(similarities))
        task = self.tasks[self.tasks.ids[best]]
        own = float(similarities[best]) > 1 - 1e-5  # the task's own prompt (or its exact embedding)
        problem = None if own else vocabulary_problem(prompt, f"{task.organ} {task.modality} {task.prompt}")
        return PromptMatch(prompt=prompt, task=task.id, similarity=float(np.clip(similarities[best], -1.0, 1.0)),
                           expanded_text=expanded, vocabulary=problem)

    def task_embeddings(self) -> np.ndarray:
        """``(T, D)`` embeddings of the task prompts, row ``i`` = task ``i``."""
        if self._task_embeddings is None:
            self._task_embeddings = self.cache.embed(self.tasks.prompts)
        return self._task_embeddings


def suggest_task(tags: dict[str, str], tasks: TaskRegistry) -> Task:
    """The task a DICOM file's tags point to, for images given without a prompt or task.

    A task is a candidate if the file's ``Modality`` is one of its ``dicom_modalities`` and, when the
    task lists ``dicom_body_parts``, the file's ``BodyPartExamined`` is one of them: a modality alone
    does not identify a task (a shoulder MR is not a brain MRI, and a CT without a body part may be
    of any organ), so such a file needs a prompt or task.

    Args:
        tags: as returned by :func:`medmoe.io.read_dicom_tags`.
        tasks: the model's tasks.

    Raises:
        PromptError: no task fits, or several do equally well.
    """
    modality = tags.get("Modality", "").upper()
    body_part = tags.get("BodyPartExamined", "").upper()
    candidates = [t for t in tasks if modality in t.dicom_modalities
                  and (not t.dicom_body_parts or body_part in t.dicom_body_parts)]
    described = f"Modality={modality or '(none)'}, BodyPartExamined={body_part or '(none)'}"
    if not candidates:
        by_modality = [t.id for t in tasks if modality in t.dicom_modalities]
        why = (f"do not say the body part, and modality {modality} alone does not identify a task "
               f"({', '.join(by_modality)} need one of their body parts)" if by_modality and not body_part
               else f"match none of the model's tasks ({', '.join(tasks.ids)})")
        raise PromptError(f"its DICOM tags ({described}) {why}; pass a prompt or a task")
    if len(candidates) > 1:
        raise PromptError(f"its DICOM tags ({described}) fit several tasks "
                          f"({', '.join(t.id for t in candidates)}); pass a prompt or a task")
    return candidates[0]
