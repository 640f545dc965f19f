"""Shared pieces of the ConversationRelay protocol tests (in-process and real server)."""

from __future__ import annotations

import json

SETUP = {
    "type": "setup",
    "sessionId": "VX00000000000000000000000000000001",
    "accountSid": "AC" + "0" * 32,
    "callSid": "CA" + "9" * 32,
    "from": "+15005550006",
    "to": "+14155550123",
    "direction": "outbound-api",
    "callType": "PSTN",
    "callStatus": "IN-PROGRESS",
    "customParameters": {},
}


def prompt(text: str) -> str:
    return json.dumps({"type": "prompt", "voicePrompt": text, "lang": "en-US", "last": True})


def interrupt(heard: str) -> str:
    return json.dumps(
        {"type": "interrupt", "utteranceUntilInterrupt": heard, "durationUntilInterruptMs": 800}
    )


def dtmf(digit: str) -> str:
    return json.dumps({"type": "dtmf", "digit": digit})


def setup(task_id) -> str:
    return json.dumps({**SETUP, "customParameters": {"task_id": str(task_id)}})
