"""Self-trade prevention across linked accounts (see ``docs/groups.md``).

An order that would trade against a resting order of an account linked to the
same group is refused before it reaches the book (``SELF_TRADE``, the "expire
taker" mode). Decided locally from :class:`~gateway.stp.book.OwnOrders`, which
:mod:`gateway.stp.sync` keeps true from the calls this gateway forwards and the
upstream's execution feed.
"""
