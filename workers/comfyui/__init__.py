"""The ComfyUI client: the only code that talks to ComfyUI (HTTP and websocket)."""
from workers.comfyui.client import ComfyUIClient, QueueState, Submission
from workers.comfyui.errors import (ComfyUIError, ComfyUIHTTPError, ComfyUIProtocolError, ComfyUIUnavailable,
                                    PromptLost, PromptRejected)
from workers.comfyui.events import (Cached, Event, Failed, Idle, ImageRef, Interrupted, NodeExecuted, NodeStarted,
                                    Preview, Progress, Reconnected, Started, Succeeded, Terminal)
from workers.comfyui.http import RetryPolicy, Timeouts
from workers.comfyui.state import PromptState

__all__ = [
    "ComfyUIClient", "PromptState", "QueueState", "Submission", "RetryPolicy", "Timeouts",
    "ComfyUIError", "ComfyUIHTTPError", "ComfyUIProtocolError", "ComfyUIUnavailable", "PromptLost", "PromptRejected",
    "Event", "Started", "Cached", "NodeStarted", "Progress", "NodeExecuted", "Preview", "Idle", "Reconnected",
    "Terminal", "Succeeded", "Failed", "Interrupted", "ImageRef",
]
