"""Wire-protocol adapters: pure translation between the router's types and each API."""
