"""The system on a network of hosts (Linux network namespaces: testkit/netns.py)."""
