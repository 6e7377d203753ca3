"""Helpers shared by the test suites: free ports, gateway processes, sites, events, environments."""
