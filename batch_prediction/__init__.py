"""Batch predictions: a file of houses priced by a registered model version, in parts that one
process or many (Cloud Run Job tasks, or local processes) write side by side, made whole by a
manifest written last."""
