"""Processes for the tests, the benchmarks and the demo: free ports, polling, polite stops, a
throwaway PostgreSQL cluster."""
