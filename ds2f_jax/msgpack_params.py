"""Reads the msgpack parameter files of `flax.serialization`, with NumPy alone.

Serving loads exported parameters without flax (and without the `msgpack`
package): this is the part of MessagePack that `msgpack_serialize` writes —
maps, arrays, strings, binaries, numbers and its extension types (1: ndarray,
2: complex, 3: NumPy scalar, each a packed (shape, dtype name, bytes) triple),
plus flax's chunked form of arrays over 1 GiB.

Anything else, including data nested deeper than MAX_DEPTH (a parameter tree
is a few levels deep; recursion would otherwise end in a RecursionError), is
a ValueError with one line.
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

_EXT_NDARRAY, _EXT_COMPLEX, _EXT_NPSCALAR = 1, 2, 3
_CHUNKED = '__msgpack_chunked_array__'
MAX_DEPTH = 64

# Fixed-width items: first byte -> (struct format, size).
_FIXED = {
    0xca: ('>f', 4), 0xcb: ('>d', 8),
    0xcc: ('>B', 1), 0xcd: ('>H', 2), 0xce: ('>I', 4), 0xcf: ('>Q', 8),
    0xd0: ('>b', 1), 0xd1: ('>h', 2), 0xd2: ('>i', 4), 0xd3: ('>q', 8),
}
_LENGTH = {1: '>B', 2: '>H', 4: '>I'}


class _Reader:
  """A cursor over one MessagePack document."""

  def __init__(self, data: bytes | memoryview):
    self.data = memoryview(data)
    self.pos = 0
    self.depth = 0

  def take(self, n: int) -> memoryview:
    if self.pos + n > len(self.data):
      raise ValueError(f'truncated msgpack data: {n} bytes needed at offset {self.pos}')
    out = self.data[self.pos:self.pos + n]
    self.pos += n
    return out

  def unpack(self, fmt: str, n: int):
    return struct.unpack(fmt, self.take(n))[0]

  def length(self, width: int) -> int:
    return self.unpack(_LENGTH[width], width)

  def value(self) -> Any:
    b = self.take(1)[0]
    if b <= 0x7f:
      return b
    if b >= 0xe0:
      return b - 0x100
    if 0x80 <= b <= 0x8f:
      return self.mapping(b & 0x0f)
    if 0x90 <= b <= 0x9f:
      return self.sequence(b & 0x0f)
    if 0xa0 <= b <= 0xbf:
      return str(self.take(b & 0x1f), 'utf-8')
    if b in _FIXED:
      return self.unpack(*_FIXED[b])
    if b == 0xc0:
      return None
    if b in (0xc2, 0xc3):
      return b == 0xc3
    if b in (0xc4, 0xc5, 0xc6):  # bin 8/16/32
      return self.take(self.length(1 << (b - 0xc4)))
    if b in (0xd9, 0xda, 0xdb):  # str 8/16/32
      return str(self.take(self.length(1 << (b - 0xd9))), 'utf-8')
    if b in (0xdc, 0xdd):  # array 16/32
      return self.sequence(self.length(2 if b == 0xdc else 4))
    if b in (0xde, 0xdf):  # map 16/32
      return self.mapping(self.length(2 if b == 0xde else 4))
    if b in (0xc7, 0xc8, 0xc9):  # ext 8/16/32
      n = self.length(1 << (b - 0xc7))
      return self.ext(n)
    if 0xd4 <= b <= 0xd8:  # fixext 1/2/4/8/16
      return self.ext(1 << (b - 0xd4))
    raise ValueError(f'unsupported msgpack type byte 0x{b:02x} at offset {self.pos - 1}')

  def nest(self) -> None:
    self.depth += 1
    if self.depth > MAX_DEPTH:
      raise ValueError(f'msgpack data nested deeper than {MAX_DEPTH} levels at offset '
                       f'{self.pos - 1}: not a parameter tree')

  def sequence(self, n: int) -> list:
    self.nest()
    out = [self.value() for _ in range(n)]
    self.depth -= 1
    return out

  def mapping(self, n: int) -> dict:
    self.nest()
    out = {}
    for _ in range(n):
      key = self.value()
      if isinstance(key, (list, dict, memoryview)):
        raise ValueError(f'msgpack map key of type {type(key).__name__} at offset {self.pos}')
      out[key] = self.value()
    self.depth -= 1
    if out.get(_CHUNKED) is True:
      return _unchunk(out)
    return out

  def ext(self, n: int) -> Any:
    code = struct.unpack('>b', self.take(1))[0]
    payload = self.take(n)
    if code == _EXT_NDARRAY:
      return _ndarray(payload)
    if code == _EXT_NPSCALAR:
      return _ndarray(payload)[()]
    if code == _EXT_COMPLEX:
      real, imag = _Reader(payload).value()
      return complex(real, imag)
    raise ValueError(f'unsupported msgpack extension type {code}')


def _dtype(name: str) -> np.dtype:
  try:
    return np.dtype(name)
  except TypeError:  # bfloat16, float8_*: NumPy extension types that ship with JAX.
    import ml_dtypes  # pylint: disable=g-import-not-at-top
    if not hasattr(ml_dtypes, name):
      raise ValueError(f'unknown array dtype {name!r} in msgpack data') from None
    return np.dtype(getattr(ml_dtypes, name))


def _ndarray(payload: memoryview) -> np.ndarray:
  shape, name, buffer = _Reader(payload).value()
  name = str(name, 'utf-8') if isinstance(name, memoryview) else name
  return np.frombuffer(buffer, dtype=_dtype(name)).reshape(shape)


def _unchunk(d: dict) -> np.ndarray:
  shape = tuple(d['shape'][str(i)] for i in range(len(d['shape'])))
  chunks = [d['chunks'][str(i)] for i in range(len(d['chunks']))]
  return np.concatenate(chunks).reshape(shape)


def loads(data: bytes | memoryview) -> Any:
  """The tree that `flax.serialization.msgpack_serialize` wrote to `data`.

  Raises:
    ValueError: for data this reader cannot take, in one line.
  """
  reader = _Reader(data)
  try:
    tree = reader.value()
  except ValueError:
    raise
  except (KeyError, TypeError, IndexError, AttributeError, struct.error) as e:
    raise ValueError(f'malformed msgpack data near offset {reader.pos}: '
                     f'{type(e).__name__}: {e}') from None
  if reader.pos != len(reader.data):
    raise ValueError(f'{len(reader.data) - reader.pos} trailing bytes after the msgpack data')
  return tree
