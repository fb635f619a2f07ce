"""A lab of real SSH hosts (Docker containers) on this machine, for tests and the demo."""
