"""Where the recordings of a real ComfyUI 0.3.64 live. They and their loader are in testkit.recordings; this name
stays for tests/unit/test_prompt_tracker.py, which imports it from here."""
from testkit.recordings import TRACES_DIR, WORKFLOWS_DIR

__all__ = ["TRACES_DIR", "WORKFLOWS_DIR"]
