"""The DB-query cache: ``QueryCache.get_or_load``, tags, stale-while-revalidate, decorators and
the SQLAlchemy 2 integration (``cache.execute(session, select(...))``).

Its modules import one way, each only from those before it:

* ``rows``: what is stored of a result (``plain_rows``);
* ``keys``: the keys of query parameters and of a decorated function's arguments, and tags;
* ``sqlalchemy``: a statement's key and tables, its rows to and from the cache (imported by
  ``QueryCache.execute``/``aexecute`` on first use: SQLAlchemy is optional);
* ``cache``: ``QueryCache``, its plan on the engines, ``Invalidates``;
* ``decorators``: ``@cached_query`` on the process's default QueryCache.
"""

from redis_checkpoint.cache.query.cache import Invalidates, QueryCache, QueryStats
from redis_checkpoint.cache.query.decorators import cached_query, get_query_cache, set_query_cache
from redis_checkpoint.cache.query.rows import plain_rows

__all__ = [
    "Invalidates",
    "QueryCache",
    "QueryStats",
    "cached_query",
    "get_query_cache",
    "plain_rows",
    "set_query_cache",
]
