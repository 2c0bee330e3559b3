"""Rate limits shared by every worker: a sliding window per agent in Redis, and provider pauses.

An agent of the pool may carry ``rpm`` (requests per minute) and ``tpm`` (tokens per minute).
Each worker asks :meth:`RateLimiter.acquire` before a call to that agent; one Lua script, atomic
on the Redis server and timed by the server's clock (so hosts need no synchronised clocks),
drops the entries older than a minute (plus a one-second margin) from the agent's sorted set
``sale:rate:<agent>``, and either records the call (its member carries the tokens it reserves:
the prompt estimate plus the output cap) or answers how long until the oldest entry that stands
in the way leaves the window. A sliding log, not a token bucket: a bucket refilled at R a
minute lets up to 2R through in some minute, the log never more than R in any 60 seconds.
After the call,
:meth:`RateLimiter.settle` replaces the reservation by the tokens the call really used and
re-times its entry to the call's end, so a request that left its worker late (a cold client)
still counts a full minute from when the provider saw it; only a call in flight longer than
the window could let the provider see R + 1 in a minute. A
provider's 429 with a Retry-After pauses the agent for every worker: :meth:`RateLimiter.pause`
sets ``sale:rate:<agent>:pause`` with that TTL, and ``acquire`` refuses while it lives.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sale.broker.leases import redis_client

WINDOW_S = 60.0
#: Entries are kept this much longer than the window: the provider counts arrivals, which lag
#: the grant by the request's own latency, so R grants a minute arrive as at most R a minute.
MARGIN_S = 1.0
KEY_PREFIX = "sale:rate:"

_ACQUIRE = """
local key, pause = KEYS[1], KEYS[2]
local window, rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local want, id = tonumber(ARGV[4]), ARGV[5]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local held = redis.call('PTTL', pause)
if held > 0 then return {0, held, 'paused'} end
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
local m = redis.call('ZRANGE', key, 0, -1, 'WITHSCORES')
local n = #m / 2
if rpm > 0 and n >= rpm then
  return {0, math.max(1, tonumber(m[(n - rpm) * 2 + 2]) + window - now), 'rpm'}
end
if tpm > 0 then
  local used = 0
  for i = 1, #m, 2 do used = used + tonumber(string.match(m[i], ':(%d+)$')) end
  if used > 0 and used + want > tpm then
    local freed = 0
    for i = 1, #m, 2 do
      freed = freed + tonumber(string.match(m[i], ':(%d+)$'))
      if used - freed + want <= tpm or freed == used then
        return {0, math.max(1, tonumber(m[i + 1]) + window - now), 'tpm'}
      end
    end
  end
end
redis.call('ZADD', key, now, id .. ':' .. want)
redis.call('PEXPIRE', key, window)
return {1, 0, 'ok'}
"""

_SETTLE = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
"""

_PAUSE = """
local ms = tonumber(ARGV[1])
if redis.call('PTTL', KEYS[1]) < ms then redis.call('SET', KEYS[1], '1', 'PX', ms) end
return 1
"""


@dataclass(frozen=True)
class Grant:
    """The answer of :meth:`RateLimiter.acquire`: granted (with the reservation's member, to
    settle), or the seconds to wait and why (``rpm``, ``tpm`` or ``paused``)."""

    granted: bool
    wait_s: float
    reason: str
    member: str = ""


class RateLimiter:
    """The shared limits of a pool's agents, in the Redis at ``url``."""

    def __init__(self, url: str) -> None:
        self.url = url

    def _keys(self, agent: str) -> tuple[str, str]:
        return KEY_PREFIX + agent, KEY_PREFIX + agent + ":pause"

    def acquire(self, agent: str, rpm: int | None, tpm: int | None, tokens: int) -> Grant:
        """Record one call of ``agent`` reserving ``tokens``, or say how long to wait."""
        member = f"{uuid.uuid4().hex}:{max(0, int(tokens))}"
        window_ms = int((WINDOW_S + MARGIN_S) * 1000)
        ok, wait_ms, reason = redis_client(self.url).eval(
            _ACQUIRE, 2, *self._keys(agent), window_ms, rpm or 0, tpm or 0, max(0, int(tokens)),
            member.split(":")[0],
        )  # fmt: skip
        reason = reason.decode() if isinstance(reason, bytes) else str(reason)
        if ok:
            return Grant(True, 0.0, reason, member)
        return Grant(False, int(wait_ms) / 1000.0, reason)

    def settle(self, agent: str, member: str, tokens: int) -> None:
        """When a granted call has ended: its entry counts from now (the provider saw the
        request between the grant and now, and a first call of a process can take seconds to
        leave it), with the tokens it used instead of its reservation."""
        used = f"{member.split(':')[0]}:{max(0, int(tokens))}"
        window_ms = int((WINDOW_S + MARGIN_S) * 1000)
        redis_client(self.url).eval(_SETTLE, 1, self._keys(agent)[0], member, used, window_ms)

    def pause(self, agent: str, seconds: float) -> None:
        """Pause ``agent`` for every worker for ``seconds`` (a provider's Retry-After); a longer
        pause already set is kept."""
        redis_client(self.url).eval(_PAUSE, 1, self._keys(agent)[1], max(1, int(seconds * 1000)))

    def in_window(self, agent: str) -> int:
        """How many calls of ``agent`` the current window holds (for tests and `sale jobs`)."""
        key = self._keys(agent)[0]
        client = redis_client(self.url)
        now_s, now_us = client.time()
        now_ms = now_s * 1000 + now_us // 1000
        return int(client.zcount(key, now_ms - int(WINDOW_S * 1000), "+inf"))

    def paused_for(self, agent: str) -> float:
        """Seconds left of the agent's provider pause (0: not paused)."""
        ms = int(redis_client(self.url).pttl(self._keys(agent)[1]))
        return ms / 1000.0 if ms > 0 else 0.0
