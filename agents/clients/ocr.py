"""The built-in local OCR engine: RapidOCR run on the ONNX models inside its own wheel.

Nothing here touches the network: every model path is given explicitly, so RapidOCR
never reaches its download code. The models load lazily, once per process, and are
shared through `get_engine()`; a dense page can push the process to about 1 GB.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

# The files RapidOCR 3.10 ships in `rapidocr/models/`; changing the pin may rename them.
MODEL_FILES = {
    "Det": "PP-OCRv6_det_small.onnx",
    "Rec": "PP-OCRv6_rec_small.onnx",
    "Cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
}
DEFAULT_MIN_CONFIDENCE = 0.5
# Stray hits on photos ("0" on a cat) are short and middling; real short text scores ~0.99.
SHORT_TEXT_MIN_CONFIDENCE = 0.95
# RapidOCR's default scales the *short* side up to 736 px, which blows small images up
# (a 49 px banner becomes 5000 px wide: 9 s, and words split and doubled at the seams).
# Capping the long side instead was as accurate on pages and screenshots and 2-10x faster.
DETECTION_MAX_SIDE = 1280
# Two boxes share a line when their vertical spans overlap by this much of the smaller one.
SAME_LINE_OVERLAP = 0.5

Point = tuple[float, float]
Box = tuple[Point, Point, Point, Point]


@dataclass(frozen=True)
class OcrLine:
    """One detected text box: its text, the recogniser's confidence and its corners."""

    text: str
    confidence: float
    box: Box

    @property
    def top(self) -> float:
        return min(y for _, y in self.box)

    @property
    def bottom(self) -> float:
        return max(y for _, y in self.box)

    @property
    def left(self) -> float:
        return min(x for x, _ in self.box)


@dataclass(frozen=True)
class OcrResult:
    """What OCR found: the text in reading order, the boxes it came from and the time taken."""

    text: str
    lines: list[OcrLine]
    seconds: float


class OcrEngine:
    """Wraps one RapidOCR instance, loaded on first use and reused afterwards."""

    def __init__(self, min_confidence: float = DEFAULT_MIN_CONFIDENCE, use_cls: bool = False) -> None:
        self.min_confidence = min_confidence
        # The upside-down line classifier stays off: images arrive upright, it costs up to
        # 2 s on a dense page, and there it flipped correct lines into garbage.
        self.use_cls = use_cls
        self._ocr: Any = None
        self._lock = threading.Lock()

    def load(self) -> None:
        """Load the models now (idempotent), e.g. to warm a worker before its first job."""
        with self._lock:
            if self._ocr is None:
                self._ocr = build_rapidocr(self.use_cls)

    def recognise(self, image: Image.Image) -> OcrResult:
        """Read the text in an upright image; an image without text gives an empty result."""
        started = time.perf_counter()
        self.load()
        pixels = to_bgr_array(image)
        with self._lock:  # ONNX Runtime already uses this worker's cores; one image at a time.
            output = self._ocr(pixels)
        rows = reading_rows([line for line in raw_lines(output) if self.keeps(line)])
        text = "\n".join(" ".join(hit.text for hit in row) for row in rows)
        lines = [hit for row in rows for hit in row]
        return OcrResult(text, lines, time.perf_counter() - started)

    def keeps(self, line: OcrLine) -> bool:
        """Whether a hit is confident enough; one-character hits need a much higher score."""
        if line.confidence < self.min_confidence:
            return False
        significant = sum(char.isalnum() for char in line.text)
        return significant >= 2 or line.confidence >= SHORT_TEXT_MIN_CONFIDENCE


_engine: OcrEngine | None = None
_engine_lock = threading.Lock()


def get_engine() -> OcrEngine:
    """The process-wide engine; its models load on the first `recognise` call."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = OcrEngine()
        return _engine


def build_rapidocr(use_cls: bool) -> Any:
    """A RapidOCR with its ONNX sessions created, using only the bundled models."""
    import rapidocr

    ocr: Any = rapidocr.RapidOCR(params=rapidocr_params(use_cls, Path(rapidocr.__file__).parent / "models"))
    # RapidOCR would create each session on its first call; do it now so `load()` means loaded.
    ocr._load_det_model()
    ocr._load_rec_model()
    if use_cls:
        ocr._load_cls_model()
    return ocr


def rapidocr_params(use_cls: bool, model_dir: Path) -> dict[str, Any]:
    """RapidOCR settings with explicit model paths, so it never reaches its download code."""
    params: dict[str, Any] = {
        "Global.use_cls": use_cls,
        "Global.text_score": 0.0,  # we filter ourselves, see OcrEngine.keeps
        "Global.log_level": "error",  # "no text found" is a normal outcome, not a warning
        "Det.limit_type": "max",
        "Det.limit_side_len": DETECTION_MAX_SIDE,
        "EngineConfig.onnxruntime.intra_op_num_threads": threads_per_worker(),
    }
    for section, name in MODEL_FILES.items():
        path = model_dir / name
        if not path.is_file():
            raise FileNotFoundError(f"RapidOCR model missing: {path} (is rapidocr pinned?)")
        params[f"{section}.model_path"] = str(path)
    return params


def threads_per_worker() -> int:
    """This worker's share of the cores for ONNX Runtime; -1 (its default, every core) for a sole worker.

    Each django-q2 worker loads its own engine, and by default each would use every core:
    two busy workers on two cores then read about half as many pages a second as with one
    thread each (benchmarks/bench_local_agent.py).
    """
    from django.conf import settings

    if not (settings.configured or os.environ.get("DJANGO_SETTINGS_MODULE")):
        return -1
    cores, workers = os.cpu_count() or 1, settings.WORKERS
    return max(1, cores // workers) if workers > 1 else -1


def to_bgr_array(image: Image.Image) -> np.ndarray:
    """Any PIL image as the 8-bit BGR array RapidOCR expects; transparency becomes white."""
    if image.has_transparency_data:
        rgba = image.convert("RGBA")
        image = Image.new("RGBA", rgba.size, "white")
        image.alpha_composite(rgba)
    rgb = np.asarray(image.convert("RGB"))
    return np.ascontiguousarray(rgb[:, :, ::-1])


def raw_lines(output: Any) -> list[OcrLine]:
    """The hits in a RapidOCR output, which has no `txts` when nothing was found."""
    texts = getattr(output, "txts", None) or ()
    scores = getattr(output, "scores", None) or ()
    boxes = getattr(output, "boxes", None)
    if boxes is None:
        return []
    return [
        OcrLine(" ".join(text.split()), float(score), as_box(box))
        for text, score, box in zip(texts, scores, boxes, strict=False)
        if text.strip()
    ]


def as_box(corners: Any) -> Box:
    """Four corner points as plain floats, so results serialise without numpy."""
    a, b, c, d = ((float(x), float(y)) for x, y in corners)
    return (a, b, c, d)


def reading_rows(hits: list[OcrLine]) -> list[list[OcrLine]]:
    """Hits in reading order: rows top to bottom, each row left to right."""
    return [sorted(row, key=lambda hit: hit.left) for row in group_rows(hits)]


def group_rows(hits: list[OcrLine]) -> list[list[OcrLine]]:
    """Group hits into rows: a hit joins the row above when their vertical spans overlap enough."""
    rows: list[list[OcrLine]] = []
    for hit in sorted(hits, key=lambda h: (h.top + h.bottom) / 2):
        if rows and overlap_ratio(hit, rows[-1]) >= SAME_LINE_OVERLAP:
            rows[-1].append(hit)
        else:
            rows.append([hit])
    return rows


def overlap_ratio(hit: OcrLine, row: list[OcrLine]) -> float:
    """How much of the shorter of the hit and the row the two share vertically, 0 to 1."""
    top, bottom = min(h.top for h in row), max(h.bottom for h in row)
    shared = min(hit.bottom, bottom) - max(hit.top, top)
    shorter = min(hit.bottom - hit.top, bottom - top)
    return shared / shorter if shorter > 0 else 0.0
