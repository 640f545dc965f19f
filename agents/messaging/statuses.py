"""Twilio message statuses and error codes, mapped onto ours with dicts.

Sources: twilio.com/docs/messaging/guides/outbound-message-status-in-status-callbacks,
twilio-python ``MessageInstance.Status``, twilio.com/docs/api/errors.
"""

from __future__ import annotations

from orchestrator.states import TaskStatus

S = TaskStatus

# Twilio MessageStatus → the task state it moves the task to.
TASK_STATUS: dict[str, str] = {
    "accepted": S.IN_PROGRESS,
    "scheduled": S.IN_PROGRESS,
    "queued": S.IN_PROGRESS,
    "sending": S.IN_PROGRESS,
    "sent": S.IN_PROGRESS,
    "delivered": S.SUCCEEDED,
    "read": S.SUCCEEDED,
    "partially_delivered": S.SUCCEEDED,
    "undelivered": S.FAILED,
    "failed": S.FAILED,
    "canceled": S.CANCELLED,
}
# Statuses of inbound messages: they never reach the status webhook of an outbound message.
IGNORED = frozenset({"receiving", "received"})

# Callbacks arrive in any order: the dossier message keeps the highest-ranked status seen.
RANK: dict[str, int] = {
    "accepted": 1,
    "scheduled": 1,
    "queued": 2,
    "sending": 3,
    "sent": 4,
    "canceled": 5,
    "failed": 5,
    "undelivered": 6,
    "partially_delivered": 7,
    "delivered": 8,
    "read": 9,
}

# Twilio error code → a reason an operator can act on.
ERROR_REASONS: dict[str, str] = {
    "20003": "Twilio refused our credentials (check TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN)",
    "20429": "Twilio rate limit: too many requests",
    "21211": "the 'To' number is not a valid phone number",
    "21408": "sending to this region is not enabled on the Twilio account (geo permissions)",
    "21610": "the recipient replied STOP: Twilio blocks messages to this number until they reply START",
    "21612": "Twilio cannot route a message from this sender to this number",
    "21614": "the 'To' number is not a mobile number (it cannot receive SMS)",
    "21617": "the message body is too long",
    "30001": "the message queue overflowed at Twilio (too many messages queued)",
    "30002": "the Twilio account is suspended",
    "30003": "the handset is unreachable (switched off or out of coverage)",
    "30004": "the message was blocked by the recipient or their carrier",
    "30005": "the destination number is unknown or no longer exists",
    "30006": "the destination is a landline or its carrier cannot receive SMS",
    "30007": "the carrier filtered the message as spam",
    "30008": "unknown error from the carrier",
    "63016": "WhatsApp refused free text outside the 24-hour customer-service window: use an approved template",
}


def error_reason(code: str | int | None, fallback: str = "") -> str:
    if code in (None, ""):
        return fallback
    return ERROR_REASONS.get(str(code), fallback or f"Twilio error {code}")


# A status callback whose task state cannot be reached from where the task is (e.g.
# "failed" after the task already succeeded) is stored but changes nothing.
OPT_OUT_ERROR = "21610"
