"""Key mapping from other toolkits' checkpoints into seglab models."""
