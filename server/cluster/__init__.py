"""Shared live state for several server processes and machines, kept in Redis.

Imported only when ``config.redis`` is set: the single-process default never loads redis-py.

* ``store``: the connection and the key names of one cluster (a prefix per cluster).
* ``directory``: which node holds each user's session; node leases; reaping dead nodes.
* ``bus``: events to users on other nodes, one channel per node, published in batches.
* ``limits``: rate limits and login throttles shared by every node.
* ``rooms``: the meeting room registry (numbers, passwords, hosts, members with their node).
* ``peerlink``: direct TCP links between nodes for the media of meetings (the relay cascades).
* ``files``: live file transfers whose sender and recipient are on two nodes (calls and chunks
  on the bus); the spool is a directory every node shares.
"""
