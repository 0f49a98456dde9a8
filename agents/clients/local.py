"""The built-in agent: text recognition in the worker process, no server needed."""

from __future__ import annotations

import importlib.util
from io import BytesIO
from pathlib import Path

from PIL import Image

from agents.clients.base import AgentClient, AgentError, OnText, TextRequest, TextResult
from agents.models import Capability, DiscoveredModel, Discovery, Kind

OCR_MODEL = "local/ocr"


class LocalClient(AgentClient):
    kind = Kind.LOCAL

    def discover(self) -> Discovery:
        """Checks the OCR models are installed, without loading them into this process."""
        spec = importlib.util.find_spec("rapidocr")
        if spec is None or spec.origin is None:
            raise AgentError("The OCR engine is not installed (pip install -r requirements.txt)")
        from agents.clients.ocr import MODEL_FILES

        models = Path(spec.origin).parent / "models"
        missing = [name for name in MODEL_FILES.values() if not (models / name).is_file()]
        if missing:
            raise AgentError(f"OCR model files are missing from {models}: {', '.join(missing)}")
        details = {"engine": "RapidOCR (PP-OCRv6, ONNX, bundled)", "output": "text in reading order"}
        return Discovery(version="rapidocr", models=[DiscoveredModel(OCR_MODEL, Capability.OCR, details)])

    def image_to_text(self, request: TextRequest, on_text: OnText | None = None) -> TextResult:
        from agents.clients.ocr import get_engine

        try:
            image = Image.open(BytesIO(request.image))
            image.load()
        except OSError as error:
            raise AgentError(f"The image could not be read: {error}") from None
        result = get_engine().recognise(image)
        if on_text:
            on_text(result.text)
        lines = [{"text": line.text, "confidence": round(line.confidence, 3), "box": line.box} for line in result.lines]
        return TextResult(text=result.text, raw={"lines": lines, "seconds": round(result.seconds, 3)})
