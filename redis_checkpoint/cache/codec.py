"""Cache values as msgpack, with an exact round trip and no pickle on any read path.

Native msgpack types keep their type (str vs bytes, bool vs int, float64). The types msgpack lacks
travel as extension types whose payload is plain data, so decoding never runs code:

==== ============================================== ===========================================
code type                                           payload
==== ============================================== ===========================================
1    datetime.datetime                              msgpack [isoformat, zoneinfo key or None]
2    decimal.Decimal                                str(value)
3    uuid.UUID                                      the 16 bytes
4    tuple                                          msgpack list of the items
5    int beyond 64 bits                             decimal digits
6    datetime.date                                  isoformat
==== ============================================== ===========================================

Anything else raises a TypeError naming the type: a cache must refuse what it cannot give back.
"""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

import msgpack

__all__ = ["dumps", "loads"]

_DATETIME, _DECIMAL, _UUID, _TUPLE, _BIGINT, _DATE = 1, 2, 3, 4, 5, 6
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


def _zone_key(value: dt.datetime) -> str | None:
    # A ZoneInfo keeps its name (DST rules); a fixed offset is fully in the isoformat string.
    key = getattr(value.tzinfo, "key", None)
    return key if isinstance(key, str) else None


def _extension(value: Any) -> msgpack.ExtType:
    if isinstance(value, dt.datetime):
        body = [value.isoformat(), _zone_key(value)]
        return msgpack.ExtType(_DATETIME, msgpack.packb(body, use_bin_type=True))
    if isinstance(value, dt.date):
        return msgpack.ExtType(_DATE, value.isoformat().encode())
    if isinstance(value, Decimal):
        return msgpack.ExtType(_DECIMAL, str(value).encode())
    if isinstance(value, uuid.UUID):
        return msgpack.ExtType(_UUID, value.bytes)
    if isinstance(value, tuple):
        return msgpack.ExtType(_TUPLE, _pack(list(value)))
    if isinstance(value, int) and not isinstance(value, bool):
        return msgpack.ExtType(_BIGINT, str(value).encode())
    raise TypeError(
        f"cannot cache a value of type {type(value).__module__}.{type(value).__qualname__}: "
        "the cache stores str, bytes, int, float, bool, None, list, tuple, dict, datetime, "
        "date, Decimal and UUID (convert it, or pass encode=/decode= hooks)"
    )


def _ext_hook(code: int, data: bytes) -> Any:
    if code == _DATETIME:
        text, zone = msgpack.unpackb(data, raw=False)
        value = dt.datetime.fromisoformat(text)
        if zone is not None:
            from zoneinfo import ZoneInfo

            value = value.replace(tzinfo=ZoneInfo(zone))
        return value
    if code == _DATE:
        return dt.date.fromisoformat(data.decode())
    if code == _DECIMAL:
        return Decimal(data.decode())
    if code == _UUID:
        return uuid.UUID(bytes=data)
    if code == _TUPLE:
        return tuple(loads(data))
    if code == _BIGINT:
        return int(data.decode())
    raise ValueError(f"unknown msgpack extension type {code}")


def _pack(value: Any) -> bytes:
    packed: bytes = msgpack.packb(
        value, default=_extension, use_bin_type=True, datetime=False, strict_types=True
    )
    return packed


def _needs_ext(value: Any) -> bool:
    return (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not (_INT64_MIN <= value <= _UINT64_MAX)
    )


def dumps(value: Any) -> bytes:
    """Encode ``value``; TypeError (naming the type) if the cache cannot give it back exactly."""
    try:
        return _pack(value)
    except OverflowError:
        # msgpack refuses ints past 64 bits before calling default; walk and wrap them.
        return _pack(_wrap_big(value))


def _wrap_big(value: Any) -> Any:
    if _needs_ext(value):
        return msgpack.ExtType(_BIGINT, str(value).encode())
    if isinstance(value, list):
        return [_wrap_big(v) for v in value]
    if isinstance(value, tuple):
        return msgpack.ExtType(_TUPLE, _pack([_wrap_big(v) for v in value]))
    if isinstance(value, dict):
        return {_wrap_big(k): _wrap_big(v) for k, v in value.items()}
    return value


def loads(data: bytes) -> Any:
    """Decode what :func:`dumps` wrote. Raises ValueError (or a msgpack error) on foreign bytes."""
    return msgpack.unpackb(
        data, raw=False, ext_hook=_ext_hook, strict_map_key=False, timestamp=0, use_list=True
    )
