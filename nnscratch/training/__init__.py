"""Training: the loop (:mod:`.loop`: :func:`fit`, :func:`evaluate`, :func:`predict`), its
per-epoch record (:mod:`.history`) and the checkpoints a run resumes from exactly (:mod:`.checkpoint`)."""
from .checkpoint import find_diverged_parameter, load_checkpoint, save_checkpoint, set_generator_state
from .history import History
from .loop import (
    ParametersDivergedError, TrainingDivergedError, evaluate, fit, forward_in_batches, in_jupyter_kernel, predict,
    predict_proba, show_progress_by_default,
)

__all__ = [
    "History", "ParametersDivergedError", "TrainingDivergedError", "evaluate", "find_diverged_parameter", "fit",
    "forward_in_batches", "in_jupyter_kernel", "load_checkpoint", "predict", "predict_proba", "save_checkpoint",
    "set_generator_state", "show_progress_by_default",
]
