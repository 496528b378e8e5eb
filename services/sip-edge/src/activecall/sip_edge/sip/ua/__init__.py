"""The SIP user agent: calls in and out, requests outside dialogs, registrations."""
