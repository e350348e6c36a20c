"""The rules of the domain in plain code: events, filters, matching, the subscriber, alert text.

Nothing here does I/O or imports an I/O library, so every rule can be read and tested alone;
the layers above (managers, services, bot) bring the connections.
"""
