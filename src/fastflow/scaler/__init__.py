"""The scaler: pure policy decisions, the Docker swarm client, the controller."""
