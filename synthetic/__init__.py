"""Synthetic paediatric TSC brain MRI studies (DICOM) with ground truth.

Public API::

    from synthetic import generate_study, StudyOptions, GeneratedStudy, draw_subject, SubjectParams
    study = generate_study(out_root, seed, StudyOptions(encoding="classic"))

See ``synthetic/README.md`` for the layout written and the label model.
"""

__version__ = "1.0.0"

from .subject import LabelModel, SubjectParams, Tuber, best_achievable_auc, draw_subject, posterior_uncontrolled  # noqa: E402
from .study import GeneratedStudy, StudyOptions, generate_study, subject_id  # noqa: E402

__all__ = [
    "GeneratedStudy",
    "LabelModel",
    "StudyOptions",
    "SubjectParams",
    "Tuber",
    "best_achievable_auc",
    "draw_subject",
    "generate_study",
    "posterior_uncontrolled",
    "subject_id",
]
