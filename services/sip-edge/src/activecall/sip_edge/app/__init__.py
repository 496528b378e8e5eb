"""The edge's application on top of the SIP stack: calls, their media legs, admission and handlers."""
