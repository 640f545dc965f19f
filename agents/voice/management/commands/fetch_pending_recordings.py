from agents.common.commands import pending_fetch_command
from agents.voice.services import recordings_pending_fetch

Command = pending_fetch_command(
    recordings_pending_fetch,
    noun="recording(s) for download",
    help="Queue the download of call recordings not fetched yet (lost while Redis was down, or failing). "
    "Beat runs the same every MEDIA_PICKUP_INTERVAL_SECONDS.",
)
