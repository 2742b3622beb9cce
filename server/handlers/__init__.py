"""Handlers, one class per domain (``SessionHandler``, ``FriendsHandler``, ...).

Each is built by server.app with the services it uses passed to its constructor, and hands its
packet handlers to the mediator with one ``mediator.register(handler.routes())``.
"""
