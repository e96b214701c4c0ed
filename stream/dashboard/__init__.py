"""`sentistream dashboard`: the analyst's web page over the same PostgreSQL the worker writes.

Three parts, one concept each: ``confidence`` (the Wilson interval drawn around a negative share),
``read_model`` (every query the page needs, each in a READ ONLY transaction) and ``server`` (aiohttp:
the static page with its vendored chart library, and the JSON endpoints the page polls).
"""
