"""Call recording (docs/RECORDING.md): the `record_call` node's service (`CallRecorder`, a
`flows.hooks.CallRecordings`), the console API's actions on live calls, and where files go."""

from .layout import day_folder, local_path, recording_path, safe_name
from .service import ACTIONS, RECORDING_VAR, CallRecorder, RecordingError, UnknownCall

__all__ = [
    "ACTIONS",
    "RECORDING_VAR",
    "CallRecorder",
    "RecordingError",
    "UnknownCall",
    "day_folder",
    "local_path",
    "recording_path",
    "safe_name",
]
