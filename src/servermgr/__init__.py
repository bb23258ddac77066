"""servermgr: a lightweight manager for a fleet of Linux servers."""

__version__ = "0.1.0"
