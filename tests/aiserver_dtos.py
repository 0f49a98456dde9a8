"""AI Server's Image to Text DTOs, as its Python "Add ServiceStack Reference" would give them.

Field names and types follow aiserver-spec.md §2.3 (AiServer.ServiceModel/Generations.cs and
QueueGenerations.cs). Note QueueImageToText has no Model or Prompt in AI Server.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from enum import Enum
from typing import List, Optional

from dataclasses_json import LetterCase, Undefined, dataclass_json
from servicestack import IGet, IReturn, ResponseStatus


class BackgroundJobState(str, Enum):
    QUEUED = "Queued"
    STARTED = "Started"
    EXECUTED = "Executed"
    COMPLETED = "Completed"
    FAILED = "Failed"
    CANCELLED = "Cancelled"


@dataclass_json(letter_case=LetterCase.CAMEL, undefined=Undefined.EXCLUDE)
@dataclass
class TextOutput:
    text: Optional[str] = None


@dataclass_json(letter_case=LetterCase.CAMEL, undefined=Undefined.EXCLUDE)
@dataclass
class TextGenerationResponse:
    results: Optional[List[TextOutput]] = None
    duration: Optional[datetime.timedelta] = None
    response_status: Optional[ResponseStatus] = None


@dataclass_json(letter_case=LetterCase.CAMEL, undefined=Undefined.EXCLUDE)
@dataclass
class QueueGenerationResponse:
    job_id: int = 0
    ref_id: Optional[str] = None
    job_state: Optional[BackgroundJobState] = None
    status: Optional[str] = None
    response_status: Optional[ResponseStatus] = None
    status_url: Optional[str] = None


@dataclass_json(letter_case=LetterCase.CAMEL, undefined=Undefined.EXCLUDE)
@dataclass
class GetTextGenerationStatusResponse:
    job_id: int = 0
    ref_id: Optional[str] = None
    job_state: Optional[BackgroundJobState] = None
    status: Optional[str] = None
    results: Optional[List[TextOutput]] = None
    duration: Optional[datetime.timedelta] = None
    response_status: Optional[ResponseStatus] = None


@dataclass_json(letter_case=LetterCase.CAMEL, undefined=Undefined.EXCLUDE)
@dataclass
class ImageToText(IReturn[TextGenerationResponse]):
    image: Optional[str] = None
    model: Optional[str] = None
    prompt: Optional[str] = None
    ref_id: Optional[str] = None
    tag: Optional[str] = None


@dataclass_json(letter_case=LetterCase.CAMEL, undefined=Undefined.EXCLUDE)
@dataclass
class QueueImageToText(IReturn[QueueGenerationResponse]):
    image: Optional[str] = None
    ref_id: Optional[str] = None
    reply_to: Optional[str] = None
    tag: Optional[str] = None
    state: Optional[str] = None


@dataclass_json(letter_case=LetterCase.CAMEL, undefined=Undefined.EXCLUDE)
@dataclass
class GetTextGenerationStatus(IReturn[GetTextGenerationStatusResponse], IGet):
    job_id: Optional[int] = None
    ref_id: Optional[str] = None
