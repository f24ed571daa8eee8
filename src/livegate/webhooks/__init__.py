"""Signed webhooks (Standard Webhooks) for generation lifecycle events.

``policy``: pure decisions (which endpoints get which event, the retry schedule, which
addresses may be called); ``sender``: the one HTTP request of an attempt, with the address
check at connect time; the delivery loop itself is :mod:`livegate.service.webhooks`.
"""
