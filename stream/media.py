"""Fetch the images that posts link to, without letting an untrusted URL aim the worker at our network.

A post's media URL is attacker-controlled, so every fetch is bounded (time, bytes, pixels, redirects,
concurrency) and every outcome is a :class:`MediaResult`: a failed image degrades its post to text-only
scoring, it never raises into the pipeline.

Why aiohttp rather than requests in a thread pool: the worker already runs on asyncio (Faust ships
aiohttp), so hundreds of slow image servers cost no threads; and, the reason that decides it, aiohttp
lets us plug in the DNS resolver.  :class:`CheckedResolver` resolves the host, refuses non-public
addresses, and hands the connector exactly the addresses it checked, so the socket connects to a
checked IP (no DNS-rebinding window between check and connect) while the Host header and TLS SNI/
certificate check still use the hostname.  With requests the same pinning needs a transport adapter
that rewrites URLs and patches SNI by hand.

Address policy (applied to the first URL and again to every redirect hop, which we follow manually):
only http/https; every address a host resolves to must be public (not loopback, private, link-local,
multicast, reserved, unspecified, shared/CGNAT, nor an IPv6 form that embeds such an IPv4 address:
IPv4-mapped, 6to4, NAT64).  ``media_allow_hosts`` lists ``host`` or ``host:port`` entries that skip this
check (the demo's loopback media server), exactly as written: ``127.0.0.1:8123`` opens that port only.

Deadlines: ``deadline_s`` (SENTISTREAM_MEDIA_TIMEOUT_S) bounds one fetch in total, connect, every
redirect hop, headers and body, across all retries; it starts once the fetch holds its slots, so a URL
queued behind others is not timed out before it was tried.  Slots are two semaphores: one per host
(``per_host``, the host of the URL as posted; its redirect hops ride on that slot) taken first, then the
global ``concurrency``.  So 24 hanging URLs on one host hold ``per_host`` global slots at most, and a
picture on another host starts at once.  A batch additionally has ``batch_budget_s`` for all its pictures
(:meth:`MediaFetcher.fetch_many`): what has not finished by then is cancelled and recorded as ``timeout``,
and its post is scored with the pictures that did arrive (text-only when none did).

Image types are not taken from the Content-Type header: the body is decoded by Pillow restricted to
JPEG/PNG/GIF/WEBP (so no EPS/ghostscript path), and width x height from the image header is checked
against ``max_pixels`` before the pixels are decoded (decompression bombs).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import ipaddress
import logging
import socket
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from PIL import Image, UnidentifiedImageError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)
from yarl import URL

from stream.settings import Settings

logger = logging.getLogger(__name__)

MEDIA_STATUSES = ("ok", "too_large", "bad_type", "timeout", "blocked", "http_error")
ALLOWED_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "GIF", "WEBP")
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# A header that names one of these is trusted to be "not an image" and saves the download; anything
# else (image/*, octet-stream, missing) is downloaded and judged by decoding.
_NON_IMAGE_MAIN_TYPES = frozenset({"text", "audio", "font", "multipart", "message", "model"})
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
# (host, port, family) -> [(family, ip string)]; the default asks the OS via loop.getaddrinfo.
Lookup = Callable[[str, int, int], Awaitable[list[tuple[int, str]]]]


@dataclass(frozen=True, slots=True)
class MediaResult:
    """The outcome of one URL; ``image`` is an RGB image shared with the cache, so treat it read-only."""

    url: str
    status: str
    image: Image.Image | None = None
    sha256: str | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    content_type: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


class BlockedAddressError(OSError):
    """The URL's host resolves to an address the policy refuses; raised inside the resolver."""


class _Rejected(Exception):
    """Internal: ends an attempt with a final status (and whether trying again could help)."""

    def __init__(self, status: str, error: str, retryable: bool = False, content_type: str | None = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.retryable = retryable
        self.content_type = content_type


# --------------------------------------------------------------------------------------------------
# Address policy
# --------------------------------------------------------------------------------------------------

def address_is_public(ip: IPAddress) -> bool:
    """True when ``ip`` is a globally routable unicast address that no special range claims."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:  # ::ffff:a.b.c.d reaches a.b.c.d: judge that address alone
            return address_is_public(ip.ipv4_mapped)
        embedded = ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None and not address_is_public(embedded):
            return False
    elif ip in _CGNAT:
        return False
    special = (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_multicast
               or ip.is_reserved or ip.is_unspecified)
    return not special and ip.is_global


def _normal_host(host: str) -> str:
    host = host.strip().lower().rstrip(".")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


@dataclass(frozen=True)
class AllowList:
    """Hosts that bypass the address check: ``host`` (any port) or ``host:port`` / ``[v6]:port``."""

    any_port: frozenset[str] = frozenset()
    host_ports: frozenset[tuple[str, int]] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        any_port: set[str] = set()
        host_ports: set[tuple[str, int]] = set()
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            host, port = entry, None
            if entry.startswith("["):
                close = entry.index("]")
                host, rest = entry[1:close], entry[close + 1:]
                port = int(rest[1:]) if rest.startswith(":") else None
            elif entry.count(":") == 1:
                host, port_text = entry.split(":")
                port = int(port_text)
            if port is None:
                any_port.add(_normal_host(host))
            else:
                host_ports.add((_normal_host(host), port))
        return cls(frozenset(any_port), frozenset(host_ports))

    def permits(self, host: str, port: int) -> bool:
        name = _normal_host(host)
        return name in self.any_port or (name, port) in self.host_ports


async def _os_lookup(host: str, port: int, family: int) -> list[tuple[int, str]]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, family=family, type=socket.SOCK_STREAM)
    return [(fam, sockaddr[0]) for fam, _type, _proto, _canon, sockaddr in infos]


class CheckedResolver(AbstractResolver):
    """Resolve once, check every address, and return only what was checked (the connect target)."""

    def __init__(self, allow: AllowList, lookup: Lookup | None = None) -> None:
        self._allow = allow
        self._lookup = lookup or _os_lookup

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_UNSPEC
    ) -> list[ResolveResult]:
        answers = await self._lookup(host, port, family)
        if not answers:
            raise OSError(f"{host} did not resolve")
        if not self._allow.permits(host, port):
            for _fam, ip_text in answers:
                ip = ipaddress.ip_address(ip_text.split("%", 1)[0])
                if not address_is_public(ip):
                    raise BlockedAddressError(f"{host} resolves to non-public address {ip}")
        flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
        return [ResolveResult(hostname=host, host=ip_text, port=port, family=fam, proto=0, flags=flags)
                for fam, ip_text in answers]

    async def close(self) -> None:
        return None


# --------------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DecodedImage:
    image: Image.Image
    format: str
    width: int
    height: int


def decode_image(
    body: bytes,
    max_pixels: int,
    formats: Sequence[str] = ALLOWED_FORMATS,
    draft_side: int | None = None,
) -> DecodedImage:
    """Decode ``body`` as one of ``formats`` into RGB, refusing more than ``max_pixels`` before decoding.

    ``draft_side`` lets JPEG decode at a reduced DCT scale that still keeps both sides >= draft_side,
    several times faster when the model only needs 256 px; width/height report the original size.
    Raises _Rejected(bad_type | too_large).
    """
    try:
        with Image.open(io.BytesIO(body), formats=list(formats)) as probe:
            width, height = probe.size
            if width * height > max_pixels:
                raise _Rejected("too_large", f"{width}x{height} = {width * height} pixels > {max_pixels}")
            fmt = probe.format or "unknown"
            if draft_side and fmt == "JPEG":
                probe.draft("RGB", (draft_side, draft_side))
            probe.load()
            image = probe.convert("RGB")
    except Image.DecompressionBombError as exc:
        raise _Rejected("too_large", f"decompression bomb: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise _Rejected("bad_type", f"not a {'/'.join(formats)} image") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt data
        raise _Rejected("bad_type", f"undecodable image: {exc}") from exc
    return DecodedImage(image, fmt, width, height)


# --------------------------------------------------------------------------------------------------
# Fetcher
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MediaLimits:
    """Caps on one URL and on one batch.  ``connect/read/total_timeout_s`` bound one attempt (so a silent
    server is retried within the deadline); ``deadline_s`` bounds the whole fetch, whatever a server
    does (trickling bytes, an endless body, redirect chains, retries)."""

    max_bytes: int = 8 * 1024 * 1024
    max_pixels: int = 40_000_000
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    total_timeout_s: float = 10.0
    deadline_s: float = 15.0  # one URL, all attempts and backoff included: bounds how long a batch waits
    max_redirects: int = 3
    retries: int = 2
    backoff_s: float = 0.25
    concurrency: int = 8
    per_host: int = 2  # fetches in flight per host, so one slow host cannot take every global slot
    batch_budget_s: float | None = 30.0  # fetch_many's budget for all its URLs; None = wait for all
    cache_entries: int = 1024
    cache_max_pixels: int = 64_000_000
    formats: tuple[str, ...] = ALLOWED_FORMATS
    draft_side: int | None = None


@dataclass
class _Cache:
    """Bounded LRU of final outcomes keyed by the URL's sha256, limited in entries and held pixels."""

    max_entries: int
    max_pixels: int
    items: OrderedDict[str, MediaResult] = field(default_factory=OrderedDict)
    pixels: int = 0

    def get(self, key: str) -> MediaResult | None:
        result = self.items.get(key)
        if result is not None:
            self.items.move_to_end(key)
        return result

    def put(self, key: str, result: MediaResult) -> None:
        if self.max_entries <= 0:
            return
        if key in self.items:
            self.pixels -= _held_pixels(self.items.pop(key))
        self.items[key] = result
        self.pixels += _held_pixels(result)
        while self.items and (len(self.items) > self.max_entries or self.pixels > self.max_pixels):
            _, evicted = self.items.popitem(last=False)
            self.pixels -= _held_pixels(evicted)


def _held_pixels(result: MediaResult) -> int:
    return result.image.width * result.image.height if result.image is not None else 0


def url_key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


class MediaFetcher:
    """Fetch image URLs under :class:`MediaLimits` and the address policy; use as an async context.

    ``async with MediaFetcher(limits, allow_hosts) as fetcher: result = await fetcher.fetch(url)``.
    Concurrency is bounded by a semaphore; identical URLs in flight share one request and final
    outcomes (not timeouts or 5xx) are cached.  ``fetch`` never raises, except CancelledError.
    """

    def __init__(
        self,
        limits: MediaLimits | None = None,
        allow_hosts: Iterable[str] = (),
        *,
        lookup: Lookup | None = None,
        user_agent: str = "sentistream-media/0.1",
    ) -> None:
        self.limits = limits or MediaLimits()
        self.allow = AllowList.parse(allow_hosts)
        self._lookup = lookup
        self._user_agent = user_agent
        self._session: aiohttp.ClientSession | None = None
        self._semaphore: asyncio.Semaphore | None = None
        self._hosts: dict[str, _HostSlots] = {}
        self._cache = _Cache(self.limits.cache_entries, self.limits.cache_max_pixels)
        self._inflight: dict[str, asyncio.Task[MediaResult]] = {}

    @classmethod
    def from_settings(cls, settings: Settings, **kwargs: Any) -> MediaFetcher:
        """SENTISTREAM_MEDIA_TIMEOUT_S is the whole fetch's deadline; one attempt may use all of it, but a
        server silent for half of it is given up on early enough to be retried inside it."""
        timeout = settings.media_timeout_s
        limits = MediaLimits(
            max_bytes=settings.media_max_bytes,
            max_pixels=settings.media_max_pixels,
            connect_timeout_s=timeout / 2,
            read_timeout_s=timeout / 2,
            total_timeout_s=timeout,
            deadline_s=timeout,
            max_redirects=settings.media_max_redirects,
            retries=settings.media_retries,
            concurrency=settings.media_concurrency,
            per_host=settings.media_per_host,
            batch_budget_s=settings.media_batch_budget_s if settings.media_batch_budget_s > 0 else None,
            cache_entries=settings.media_cache_entries,
        )
        return cls(limits, settings.media_allow_hosts, **kwargs)

    async def __aenter__(self) -> MediaFetcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Open the HTTP session; needs a running event loop (call it from the worker's startup)."""
        if self._session is not None:
            return
        lim = self.limits
        connector = aiohttp.TCPConnector(
            resolver=CheckedResolver(self.allow, self._lookup),
            use_dns_cache=False,  # every connection goes through the check
            limit=lim.concurrency,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=lim.total_timeout_s, sock_connect=lim.connect_timeout_s,
                                          sock_read=lim.read_timeout_s),
            headers={"User-Agent": self._user_agent, "Accept": "image/*", "Accept-Encoding": "identity"},
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,  # a gzip bomb must hit max_bytes as the bytes we received
            trust_env=False,  # no proxy from the environment
        )
        self._semaphore = asyncio.Semaphore(lim.concurrency)

    async def close(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch_many(self, urls: Sequence[str], budget_s: float | None = -1.0) -> list[MediaResult]:
        """Fetch all ``urls`` concurrently (within the slots); results in the order given.

        ``budget_s`` (default: ``limits.batch_budget_s``; None waits for all) bounds the whole call: the
        URLs not done by then are cancelled (their slots go to the next batch) and come back as
        ``timeout``.  Without it a batch waits for its slowest picture, one hanging host times each
        queued URL in turn.
        """
        budget = self.limits.batch_budget_s if budget_s is not None and budget_s < 0 else budget_s
        tasks = [asyncio.ensure_future(self.fetch(u)) for u in urls]
        if not tasks:
            return []
        _done, pending = await asyncio.wait(tasks, timeout=budget)
        if pending:
            logger.warning("media budget of %gs spent: %d of %d pictures recorded as timeout",
                           budget, len(pending), len(tasks))
            for task in pending:
                task.cancel()
            for url in {u for u, t in zip(urls, tasks, strict=True) if t in pending}:
                inner = self._inflight.get(url_key(url))
                if inner is not None:
                    inner.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        return [t.result() if t not in pending else
                MediaResult(u, "timeout", error=f"the batch's media budget of {budget:g}s was spent first")
                for u, t in zip(urls, tasks, strict=True)]

    async def fetch(self, url: str) -> MediaResult:
        key = url_key(url)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._fetch_and_cache(url, key))
            self._inflight[key] = task
            task.add_done_callback(lambda _t: self._inflight.pop(key, None))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if task.cancelled() and (current is None or not current.cancelling()):
                # Another caller's budget cancelled the shared fetch; this caller was not cancelled.
                return MediaResult(url, "timeout", error="fetch cancelled when another batch's budget ran out")
            raise

    @contextlib.asynccontextmanager
    async def _slots(self, url: str) -> AsyncIterator[None]:
        """Hold this URL's host slot, then a global slot (in that order: waiting on a busy host never
        occupies a global slot)."""
        assert self._semaphore is not None
        host = _host_key(url)
        slots = self._hosts.get(host)
        if slots is None:
            slots = self._hosts[host] = _HostSlots(asyncio.Semaphore(max(1, self.limits.per_host)))
        slots.users += 1
        try:
            async with slots.semaphore, self._semaphore:
                yield
        finally:
            slots.users -= 1
            if slots.users == 0:  # forget idle hosts: hostile posts can name unboundedly many
                self._hosts.pop(host, None)

    async def _fetch_and_cache(self, url: str, key: str) -> MediaResult:
        if self._session is None or self._semaphore is None:
            await self.start()
        deadline = self.limits.deadline_s
        try:
            async with self._slots(url):
                async with asyncio.timeout(deadline):
                    result, cacheable = await self._fetch_with_retries(url)
        except TimeoutError:
            result = MediaResult(url, "timeout", error=f"no result within the {deadline:g}s deadline "
                                 "(connect, redirects, headers and body, all attempts)")
            cacheable = False
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug here must not drop the post: report it as this URL's failure
            logger.exception("media fetch of %s failed unexpectedly", url)
            result, cacheable = MediaResult(url, "http_error", error=f"internal error: {exc!r}"), False
        if cacheable:
            self._cache.put(key, result)
        logger.debug("media %s -> %s %s", url, result.status, result.error or "")
        return result

    async def _fetch_with_retries(self, url: str) -> tuple[MediaResult, bool]:
        """Return the result and whether it may be cached (final outcomes only, not 5xx/timeouts).

        Runs inside the caller's slots and deadline: backoff sleeps count against the deadline too.
        """
        lim = self.limits

        def log_retry(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            logger.debug("media %s: %s, retry %d in %.2fs", url, error, state.attempt_number,
                         state.next_action.sleep if state.next_action else 0.0)

        retrying = AsyncRetrying(
            stop=stop_after_attempt(lim.retries + 1),
            wait=(wait_exponential(multiplier=lim.backoff_s, max=max(lim.backoff_s, lim.deadline_s / 2))
                  + wait_random(0, lim.backoff_s)),
            retry=retry_if_exception(lambda exc: isinstance(exc, _Rejected) and exc.retryable),
            before_sleep=log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._fetch_once(url), True
        except _Rejected as rejected:
            result = MediaResult(url, rejected.status, content_type=rejected.content_type, error=rejected.error)
            return result, not rejected.retryable
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _fetch_once(self, url: str) -> MediaResult:
        body, content_type = await self._download(url)
        lim = self.limits
        try:
            decoded = await asyncio.to_thread(decode_image, body, lim.max_pixels, lim.formats, lim.draft_side)
        except _Rejected as rejected:
            rejected.content_type = content_type
            raise
        digest = hashlib.sha256(body).hexdigest()
        decoded.image.info["sha256"] = digest  # the Scorer's image-feature cache key (model/image_cache.py)
        return MediaResult(
            url, "ok", image=decoded.image, sha256=digest,
            width=decoded.width, height=decoded.height, bytes=len(body),
            content_type=Image.MIME.get(decoded.format, content_type),
        )

    async def _download(self, url: str) -> tuple[bytes, str | None]:
        """GET ``url`` following at most ``max_redirects`` checked hops; return body and Content-Type."""
        assert self._session is not None
        lim = self.limits
        try:
            current = URL(url)
        except (ValueError, TypeError) as exc:
            raise _Rejected("blocked", f"unparseable URL: {exc}") from exc
        for _hop in range(lim.max_redirects + 1):
            self._check_url(current)
            try:
                async with self._session.get(current, allow_redirects=False) as resp:
                    if resp.status in REDIRECT_STATUSES:
                        location = resp.headers.get("Location")
                        if not location:
                            raise _Rejected("http_error", f"HTTP {resp.status} without Location")
                        try:
                            current = current.join(URL(location))
                        except ValueError as exc:
                            raise _Rejected("blocked", f"bad redirect Location {location!r}") from exc
                        continue
                    if resp.status >= 500:
                        raise _Rejected("http_error", f"HTTP {resp.status}", retryable=True)
                    if resp.status != 200:
                        raise _Rejected("http_error", f"HTTP {resp.status}")
                    content_type = resp.headers.get("Content-Type")
                    main_type = (content_type or "").split("/", 1)[0].strip().lower()
                    if main_type in _NON_IMAGE_MAIN_TYPES:
                        raise _Rejected("bad_type", f"Content-Type {content_type!r} is not an image",
                                        content_type=content_type)
                    if resp.content_length is not None and resp.content_length > lim.max_bytes:
                        raise _Rejected("too_large", f"Content-Length {resp.content_length} > {lim.max_bytes}")
                    body = await resp.content.read(lim.max_bytes + 1)
                    while len(body) <= lim.max_bytes:
                        chunk = await resp.content.read(lim.max_bytes + 1 - len(body))
                        if not chunk:
                            break
                        body += chunk
                    if len(body) > lim.max_bytes:
                        raise _Rejected("too_large", f"body exceeds {lim.max_bytes} bytes")
                    return body, content_type
            except TimeoutError as exc:
                raise _Rejected("timeout", f"timed out fetching {current}", retryable=True) from exc
            except aiohttp.ClientConnectorError as exc:
                if _caused_by(exc, BlockedAddressError):
                    raise _Rejected("blocked", str(_caused_by(exc, BlockedAddressError))) from exc
                raise _Rejected("http_error", f"cannot connect: {exc}") from exc
            except aiohttp.InvalidURL as exc:
                raise _Rejected("blocked", f"invalid URL: {exc}") from exc
            except aiohttp.ClientError as exc:
                raise _Rejected("http_error", f"{type(exc).__name__}: {exc}") from exc
        raise _Rejected("http_error", f"more than {lim.max_redirects} redirects")

    def _check_url(self, url: URL) -> None:
        """Refuse what the resolver cannot see: non-http(s) schemes and IP-literal hosts."""
        if url.scheme not in ("http", "https"):
            raise _Rejected("blocked", f"scheme {url.scheme!r} is not http(s)")
        host, port = url.host, url.port
        if not host or port is None:
            raise _Rejected("blocked", f"URL {url} has no host")
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return  # a name: CheckedResolver checks what it resolves to, at connect time
        if not self.allow.permits(host, port) and not address_is_public(ip):
            raise _Rejected("blocked", f"address {ip} is not public")


@dataclass
class _HostSlots:
    """One host's semaphore and how many fetches use or wait on it (0: the entry is dropped)."""

    semaphore: asyncio.Semaphore
    users: int = 0


def _host_key(url: str) -> str:
    """``host:port`` of a URL as posted (lower-case); unparseable URLs share one key and fail fast."""
    try:
        parsed = URL(url)
        return f"{(parsed.host or '').lower()}:{parsed.port}"
    except (ValueError, TypeError):
        return "(unparseable)"


def _caused_by(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        nxt = getattr(current, "os_error", None)
        current = nxt if isinstance(nxt, BaseException) and id(nxt) not in seen else (
            current.__cause__ or current.__context__)
    return None
