"""SIP syntax: URIs, header fields, messages, SDP bodies and digest values; no I/O."""
