"""The transactional outbox: a task to queue is a row written in the transaction that made
it due, delivered to the broker after the commit and again by a periodic relay until the
broker takes it. A broker outage delays work; it never loses or fails it.

The bottom layer beside ``audit``: it imports no app of the project (tasks are named, not
imported), so every app may queue through it. ``outbox.relay.enqueue`` writes the row;
``outbox.relay.relay`` delivers due rows.
"""
