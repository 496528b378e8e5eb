"""Request and response bodies of the gateway (pydantic v2), with the examples OpenAPI shows."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field, model_validator

from activecall.api.validation import (
    check_header_name,
    check_header_value,
    check_media_path,
    check_no_control,
    check_playbook_name,
    check_uri,
)

CALL_ID_PATTERN = r"^[A-Za-z0-9._~@+:=\-]{1,256}$"
STREAM_ID_PATTERN = r"^[0-9]{1,20}(-[0-9]{1,20})?$"
MAX_HEADERS = 32
MAX_VARIABLES = 64

Callee = Annotated[str, Field(max_length=512), AfterValidator(lambda v: check_uri(v, "callee"))]
Caller = Annotated[str, Field(max_length=512), AfterValidator(lambda v: check_uri(v, "caller"))]
SipText = Annotated[str, Field(max_length=256), AfterValidator(lambda v: check_no_control(v, "value"))]
HeaderName = Annotated[str, Field(max_length=128), AfterValidator(check_header_name)]
HeaderValue = Annotated[str, Field(max_length=1024), AfterValidator(check_header_value)]
VariableName = Annotated[str, Field(min_length=1, max_length=128)]
VariableValue = Annotated[str, Field(max_length=4096)]
TransferTarget = Annotated[str, Field(max_length=512), AfterValidator(lambda v: check_uri(v, "target"))]

GUIDE_EXAMPLE: dict[str, Any] = {
    "callee": "sip:+18005551234@yourdomain.pstn.twilio.com",
    "playbook": "sales.md",
    "sip": {
        "username": "active-call",
        "password": "strongpassword",
        "realm": "yourdomain.pstn.twilio.com",
        "enableSrtp": True,
    },
}


class Strict(BaseModel):
    """Unknown keys are errors: a misspelt option must not be ignored silently."""

    model_config = ConfigDict(extra="forbid")


class SipOptions(Strict):
    """Digest credentials for the INVITE and the per-call SRTP choice."""

    username: SipText = ""
    password: SipText = Field("", description="Used for digest authentication only; never stored or logged")
    realm: SipText = ""
    enable_srtp: bool | None = Field(
        None,
        validation_alias=AliasChoices("enableSrtp", "enable_srtp"),
        serialization_alias="enableSrtp",
        description="Per-call SRTP; overrides the global enable_srtp. `enable_srtp` is accepted too.",
    )


class CallRequest(Strict):
    """An outbound call to place."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [GUIDE_EXAMPLE]})

    callee: Callee = Field(description="sip:, sips: or tel: URI; E.164 user part for *.pstn.twilio.com")
    playbook: Annotated[str, AfterValidator(check_playbook_name)] = Field(
        description="File name of a playbook in one of the [playbooks] dirs", examples=["sales.md"]
    )
    caller: Caller | None = Field(None, description="From URI; default: the edge's own")
    sip: SipOptions = Field(default_factory=lambda: SipOptions.model_validate({}))
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict, max_length=MAX_HEADERS, description="Extra X- headers on the INVITE"
    )
    variables: dict[VariableName, VariableValue] = Field(
        default_factory=dict, max_length=MAX_VARIABLES, description="Playbook variables"
    )
    ring_timeout: float | None = Field(None, ge=1, le=300, description="Seconds to ring (default 60)")


class CallCreated(BaseModel):
    call_id: str = Field(examples=["5f0c6d1e9a2b4c3d8e7f6a5b4c3d2e1f"])
    state: str = Field(examples=["queued"])
    location: str = Field(examples=["/calls/5f0c6d1e9a2b4c3d8e7f6a5b4c3d2e1f"])


class CallSummary(BaseModel):
    call_id: str
    state: str
    direction: str
    caller: str
    callee: str
    playbook: str
    edge: str
    media_worker: str
    created: float
    answered: float
    ended: float


class CallList(BaseModel):
    calls: list[CallSummary]


class CallDetails(CallSummary):
    sip_call_id: str
    end_reason: str
    variables: dict[str, str]
    timings: dict[str, float]
    transcript: list[dict[str, Any]]


class CommandAccepted(BaseModel):
    ok: Literal[True] = True
    command: str
    turn_id: str | None = None


class HangupBody(Strict):
    reason: Annotated[str, Field(max_length=128)] = "api"


class TransferBody(Strict):
    target: TransferTarget = Field(examples=["sip:+18005550100@yourdomain.pstn.twilio.com"])


class SayBody(Strict):
    text: Annotated[str, Field(min_length=1, max_length=4000)] = Field(examples=["One moment, please."])


class InterruptBody(Strict):
    pass


class DtmfBody(Strict):
    digits: Annotated[str, Field(pattern=r"^[0-9A-Da-d*#]{1,32}$")] = Field(examples=["1234#"])
    duration_ms: int = Field(160, ge=40, le=2000)


class PlayBody(Strict):
    """One of ``file`` (relative to the media worker's audio directory) or ``url``."""

    file: Annotated[str, Field(max_length=512), AfterValidator(check_media_path)] | None = None
    url: Annotated[str, Field(max_length=2048, pattern=r"^https?://[^\s]+$")] | None = None

    @model_validator(mode="after")
    def one_source(self) -> PlayBody:
        if (self.file is None) == (self.url is None):
            raise ValueError("give exactly one of file or url")
        return self


class Problem(BaseModel):
    """An error: FastAPI's shape, ``detail`` a message (or a list of field errors for 422)."""

    detail: str


COMMAND_BODIES: dict[str, type[Strict]] = {
    "hangup": HangupBody,
    "transfer": TransferBody,
    "say": SayBody,
    "interrupt": InterruptBody,
    "dtmf": DtmfBody,
    "play": PlayBody,
}
