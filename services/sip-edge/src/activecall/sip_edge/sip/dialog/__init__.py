"""SIP dialogs and the INVITE sessions inside them (RFC 3261 sections 12-15, RFC 4028)."""
