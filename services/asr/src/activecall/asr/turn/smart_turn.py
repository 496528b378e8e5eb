"""The Smart Turn v3.2 end-of-turn model: how likely the audio up to now ends a finished turn.

The model ships in the ``pipecat-ai`` wheel (installed without its dependencies; the package itself
is never imported, only the ONNX file is read). It listens to intonation and rhythm, not words: on
telephone audio it separates finished from unfinished sentences only moderately (AUC ~0.7) and
reads more trailing silence as more finished, so the turn detector uses it as one vote among others,
asked once per pause.

The session is loaded once per process and shared: ``InferenceSession.run`` is thread-safe, and one
intra-op thread keeps one call on one core (its time: ``make bench-turn-detector``) so the recognizers of the
other calls keep theirs.
"""

from __future__ import annotations

import importlib.util
import threading
from pathlib import Path
from typing import Any, Final

import numpy as np

from activecall.asr.turn.features import model_input

MODEL_FILE: Final = "audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"
INPUT_NAME: Final = "input_features"


class SmartTurnUnavailableError(RuntimeError):
    """The model file or onnxruntime is missing."""


def model_path() -> Path:
    """Where the pipecat-ai wheel put the model (found without importing pipecat)."""
    spec = importlib.util.find_spec("pipecat")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / MODEL_FILE
        if path.is_file():
            return path
    raise SmartTurnUnavailableError(
        "Smart Turn model not found: pip install --no-deps pipecat-ai (make venv installs it)"
    )


class SmartTurnModel:
    """One ONNX session; :meth:`probability` may be called from several threads at once."""

    def __init__(self, path: Path | None = None) -> None:
        try:
            import onnxruntime  # type: ignore[import-untyped]
        except ImportError as exc:  # pragma: no cover - a broken install
            raise SmartTurnUnavailableError("onnxruntime is missing") from exc
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.path = path or model_path()
        self.session: Any = onnxruntime.InferenceSession(
            str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
        )

    def probability(self, pcm16: bytes, sample_rate: int) -> float:
        """P(the turn is finished) for the audio up to now (PCM16 mono; the last 8 s are used)."""
        features = model_input(pcm16, sample_rate)
        (scores,) = self.session.run(None, {INPUT_NAME: features})
        return float(np.asarray(scores).reshape(-1)[0])


_shared: SmartTurnModel | None = None
_lock = threading.Lock()


def shared_model() -> SmartTurnModel:
    """The process's one Smart Turn session, loaded on first use."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = SmartTurnModel()
        return _shared
