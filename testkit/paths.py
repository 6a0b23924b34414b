"""Where things are: the repository, and test-output/ where tests leave what a person may want to look at."""
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEST_OUTPUT = ROOT / "test-output"
SCREENSHOTS = TEST_OUTPUT / "screenshots"
