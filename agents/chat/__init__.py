"""``manage.py chat``: a terminal client for a running runtime, over its session WebSocket.

``workspace`` executes the IDE's tools confined to one directory, ``terminal`` draws and reads
(rich, prompt-toolkit, or plain lines when stdin/stdout are not a terminal), ``client`` speaks
the protocol: REST to find or create the session, the WebSocket for everything else.
"""
