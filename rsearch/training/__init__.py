"""Preference training of a chat model on feedback data (`rsearch train-policy`), on TRL."""
