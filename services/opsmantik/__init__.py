"""OpsMantik Revenue Kernel."""
