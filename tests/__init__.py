"""The test suite (see the README's Tests section): fixtures in conftest.py, support in testkit/."""
