from agents.common.commands import pending_fetch_command
from agents.messaging.inbound import media_pending_fetch

Command = pending_fetch_command(
    media_pending_fetch,
    noun="message(s) for media download",
    help="Queue the download of inbound media not fetched yet (lost while Redis was down, or failing). "
    "Beat runs the same every MEDIA_PICKUP_INTERVAL_SECONDS.",
)
