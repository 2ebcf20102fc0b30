"""Notification: the messages users get when their orders reach an end state."""
