"""Traffic sources beside the pipeline: replay, simulate, the host agent, the demo."""
