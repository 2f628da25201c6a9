"""Empty: see ``ray/__init__.py``."""
