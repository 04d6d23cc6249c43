"""The collector: ingest, pipeline, store, metrics, agent statistics, flows."""
