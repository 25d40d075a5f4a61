"""Third-party plugins kept as their authors wrote them, each against the documentation of
its time, and run through the contract kits by ``tests/test_third_party_plugins.py``: a
change that breaks one of them breaks a promise of the plugin API."""
