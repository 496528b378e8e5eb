"""The SIP stack of the edge, in layers; each uses only the layers below it (``make lint`` checks):

- ``ua``: the user agent, the transaction user (RFC 3261 sections 8, 10, 12-15);
- ``dialog``: dialogs and the sessions inside them (sections 12-15, RFC 4028);
- ``transaction``: client and server transactions and their timers (section 17);
- ``transport``: sockets, connections and locating servers (section 18, RFC 3263);
- ``syntax``: URIs, header fields, messages, SDP and digest values (sections 19-25, RFC 8866).

Nothing here knows of calls, the bus or the media workers: that is the application, ``app``.
"""
