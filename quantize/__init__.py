"""Training, int8 quantisation and Edge TPU checks for emocall's expression model."""
