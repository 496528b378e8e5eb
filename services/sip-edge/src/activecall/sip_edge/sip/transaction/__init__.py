"""SIP transactions and their timers (RFC 3261 section 17)."""
