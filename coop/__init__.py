"""coop: distributed, cooperative autonomous agents on Ray."""
