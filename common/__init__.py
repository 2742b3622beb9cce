"""Wire protocol shared by the server and the client: sans-IO, stdlib only."""
