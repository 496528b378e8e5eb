"""SIP transport: UDP, TCP and TLS flows (RFC 3261 section 18) and server location (RFC 3263)."""
