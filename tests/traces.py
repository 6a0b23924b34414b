"""Where the recordings of a real ComfyUI 0.3.64 live: a copy of shared/comfyui-traces kept with the tests."""
from pathlib import Path

TRACES_DIR = Path(__file__).resolve().parent / "data" / "comfyui-traces"
WORKFLOWS_DIR = TRACES_DIR / "workflows"
