"""One site's scan: discover sitemaps, walk indexes breadth-first, stream each file into the
parser and its URLs into Postgres in chunks. No transaction is open while bytes arrive: the
body sink only parses and queues; a storage task writes each chunk in its own short phase
(pipeline.py says why and how the two sides meet)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ...context import JobContext
from ...domains.record import PreviousFile, carry_file, link_scan, previous_files, record_changes
from ...errors import PermanentJobError, RetryableJobError, storable
from ...scan.discover import discover
from ...scan.fetch import Fetcher, FetchResult, Sink
from ...scan.model import ChildSitemap, SitemapUrl
from ...scan.parse import SitemapParser
from ...scan.target import Target
from ...scan.unchanged import BodyCheck, conditional_headers
from .pipeline import FileStore
from .store import (
    CHUNK,
    FileOutcome,
    FileRow,
    UrlWriter,
    file_facts,
    finish_file,
    open_row,
    record_files,
    stored_url_count,
)

log = logging.getLogger(__name__)

MAX_DEPTH = 10
MAX_FILES = 1000
SPEC_URLS_PER_FILE = 50_000  # sitemaps.org's limit: more are kept, and the file is flagged
FILES_AT_ONCE = 4


@dataclass(slots=True)
class Pending:
    url: str
    parent_id: int | None
    parent_url: str | None
    depth: int
    source: str


@dataclass
class ScanState:
    max_urls: int
    visited: set[str] = field(default_factory=set)
    kinds: Counter[str] = field(default_factory=Counter)
    files: int = 0
    errors: int = 0
    missing: int = 0  # well-known paths that are simply not there
    missing_rows: list[tuple[FileRow, tuple[Any, ...]]] = field(default_factory=list)
    ok: int = 0
    transient: int = 0  # errors a later try may not meet (timeouts, refused, 429, 5xx)
    first_error: str | None = None
    unreachable: dict[str, FetchResult] = field(default_factory=dict)  # origin -> its failure
    urls: int = 0
    bytes: int = 0
    truncated: bool = False
    known: int = 0  # files discovered so far, for progress
    # Re-scans: the previous completed scan's carriable files, by URL; files found unchanged
    previous: dict[str, PreviousFile] = field(default_factory=dict)
    carried: int = 0
    not_modified: int = 0  # of them, answered 304

    @property
    def full(self) -> bool:
        return self.urls >= self.max_urls


async def scan_site(
    ctx: JobContext, fetcher: Fetcher, target: Target, max_urls: int
) -> dict[str, Any]:
    """Scan one target; returns the job's result summary."""
    began = time.monotonic()
    # URLs an earlier run of this job committed (killed, or released at shutdown) count
    # towards max_urls and url_count: the re-run adds only what they lack.
    state = ScanState(max_urls=max_urls, urls=await stored_url_count(ctx))
    writer = UrlWriter(ctx, stored_before=state.urls)
    # Its domain first, so that a scan that fails below is still on the domain's history.
    link = await link_scan(ctx, target.domain)
    state.previous = await previous_files(ctx, link.previous_job_id)
    found = await discover(fetcher, target)
    if not found.reached:
        # A host that cannot be reached at all is asked nothing more. The job fails at once
        # with that one error, retryable when the error may pass.
        failure = (
            RetryableJobError
            if all(r.transient for _, r in found.unreachable)
            else PermanentJobError
        )
        raise failure(
            "no sitemap could be fetched: "
            + "; ".join(f"{o} cannot be reached ({r.error})" for o, r in found.unreachable)
        )
    origin, seeds, warnings = found.origin, found.seeds, found.warnings
    queue = deque(Pending(url, None, None, 0, source) for url, source in seeds)
    state.known = len(queue)
    listed = sum(1 for item in queue if item.source == "robots")
    log.info(
        "scanning %s: %d sitemap(s) listed in robots.txt, %d well-known path(s) to try%s",
        origin,
        listed,
        len(queue) - listed,
        f"; {state.urls:,} URL(s) kept from an earlier attempt" if state.urls else "",
    )
    await _walk(ctx, fetcher, writer, state, queue)
    if state.missing_rows:  # their rows, all in one statement
        await record_files(ctx, state.missing_rows)
    log.info(
        "scanned %s: %d sitemap file(s), %d URL(s) stored, %d error(s) in %.1f s",
        origin,
        state.files - state.missing,
        state.urls,
        state.errors,
        time.monotonic() - began,
    )
    if state.errors and not state.ok and not state.urls:
        # Nothing stored and nothing readable. Worth another try only if every failure
        # was one a later try may not meet; a site that answers 404 everywhere is done.
        failure = RetryableJobError if state.transient == state.errors else PermanentJobError
        raise failure(
            f"no sitemap could be fetched ({state.errors} tried); first error: {state.first_error}"
        )
    why = _incomplete(state, queue)
    changes = await record_changes(ctx, link, complete=not why)
    state.urls -= changes.duplicates
    result = {
        "domain": target.host,
        "origin": origin,
        "sitemap_count": state.files - state.missing,
        "url_count": state.urls,
        "previous_job_id": link.previous_job_id,
        "added": changes.added,
        "removed": changes.removed,
        "changed": changes.changed,
        "complete": not why,
        "unchanged_files": state.carried,
        "not_modified_files": state.not_modified,
        "error_count": state.errors,
        "well_known_missing": state.missing,
        "kinds": dict(state.kinds),
        "truncated": state.truncated or bool(queue),
        "bytes": state.bytes,
        "duration_s": round(time.monotonic() - began, 3),
    }
    if why:
        result["incomplete"] = why
    if warnings:
        result["warnings"] = warnings
    return result


def _incomplete(state: ScanState, queue: deque[Pending]) -> str | None:
    """Why the scan did not read every file whole (None: it did). URLs of the previous scan
    are then counted as removed only from files this one read whole."""
    why = []
    if state.errors:
        why.append(f"{state.errors} sitemap file(s) in error")
    if state.full:
        why.append(f"max_urls ({state.max_urls:,}) reached")
    elif state.truncated:
        why.append("a sitemap file was cut short")
    if queue:
        why.append(f"{len(queue)} listed sitemap(s) not read (the {MAX_FILES:,}-file limit)")
    return "; ".join(why) or None


async def _walk(
    ctx: JobContext, fetcher: Fetcher, writer: UrlWriter, state: ScanState, queue: deque[Pending]
) -> None:
    """Breadth-first, FILES_AT_ONCE files in flight: a file starts as soon as another ends,
    so one slow file never leaves the other slots idle. Stops starting files once the URL
    cap or the file cap is reached (what is left stays in `queue`). The first failure
    cancels the files still in flight, and waits for them, before it propagates: nothing
    of a failed job keeps running."""
    running: set[asyncio.Task[list[Pending]]] = set()
    done: set[asyncio.Task[list[Pending]]] = set()
    started = 0
    try:
        while True:
            while queue and len(running) < FILES_AT_ONCE and not state.full and started < MAX_FILES:
                item = queue.popleft()
                if item.url not in state.visited:
                    running.add(
                        asyncio.ensure_future(_scan_file(ctx, fetcher, writer, state, item))
                    )
                    started += 1
            if not running:
                return
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                children = task.result()
                queue.extend(children)
                state.known += len(children)
    except BaseException:
        for task in running:
            task.cancel()
        await asyncio.gather(*running, *done, return_exceptions=True)
        raise


async def _scan_file(
    ctx: JobContext, fetcher: Fetcher, writer: UrlWriter, state: ScanState, item: Pending
) -> list[Pending]:
    if item.url in state.visited:
        return []
    state.visited.add(item.url)
    parser = SitemapParser(item.url, max_urls=max(state.max_urls - state.urls, 1))
    pending: list[SitemapUrl] = []
    children: list[ChildSitemap] = []
    file = FileRow.of(item.url, item.parent_id, item.parent_url, item.depth, item.source)
    if item.source != "well_known":  # listed: shown while it is read (a probe only if found)
        await open_row(ctx, file)
    previous = _carriable(state, item.url)
    store = FileStore(writer, state, file)

    async def sink(chunk: bytes) -> bool:
        nonlocal pending
        for entries in parser.feed_batches(chunk):
            _sort(entries, pending, children)
            if len(pending) >= CHUNK:
                await store.put(pending)
                pending = []
        if state.full:  # reserved places: let storage settle (known URLs give theirs back)
            await store.settle()
        return not state.full and store.unstorable is None

    # A file the previous scan read whole: ask with its validators, and hold the body back
    # from the parser until its hash says whether it changed.
    check = BodyCheck(sink, hold=previous is not None)
    headers = None
    if previous is not None:
        headers = conditional_headers(previous.etag, previous.last_modified)
    unchanged, cut = False, False
    reserved = 0 if previous is None else previous.stored_urls  # by _carriable
    try:
        fetched = await _fetch(fetcher, state, item.url, check, headers)
        unchanged = previous is not None and _unchanged(fetched, check, previous)
        if not unchanged:
            state.urls -= reserved  # changed: the parser's chunks reserve their own places
            reserved = 0
        if not unchanged and check.holding and (fetched.ok or fetched.truncated):
            fetched.stopped = not await check.release() or fetched.stopped
        check.discard()
        if not unchanged:
            # A body cut short (download cap, deadline, dropped connection, or we stopped
            # reading) ends mid-entry: the parser drops the unfinished one rather than guess.
            cut = fetched.truncated or fetched.stopped
            if fetched.ok or cut:
                _sort(parser.close(cut=cut), pending, children)
            await store.put(pending)
        await store.close()
    finally:
        await store.abort()  # a no-op once closed; else nothing of this file keeps running
        if reserved and not unchanged:
            state.urls -= reserved
    if unchanged:
        assert previous is not None
        return await _carry(ctx, state, item, file, previous, fetched)
    listed, unstorable = store.listed, store.unstorable
    listed_children = [c.loc for c in children] if parser.kind == "index" or children else None
    if fetched.final_url and fetched.final_url != item.url:
        if fetched.final_url in state.visited:
            children = []  # the same document under another name: walked already
        state.visited.add(fetched.final_url)
    error = _file_error(fetched, parser, unstorable, listed, len(children))
    flag_only = error is None and listed > SPEC_URLS_PER_FILE
    if flag_only:
        error = f"{listed:,} URLs: over the sitemaps.org limit of {SPEC_URLS_PER_FILE:,} (all kept)"
    outcome = FileOutcome(
        parser.kind if fetched.status == 200 else None,
        error,
        listed,
        parser.truncated or state.full or fetched.truncated,
        parser.bytes_out,
        flag_only,
        store.stored,
        check.digest if fetched.status == 200 and fetched.ok and not cut else None,
        listed_children,
    )
    _count(state, item, fetched, outcome, transient=fetched.transient and unstorable is None)
    state.files += 1
    ctx.note_progress(min(0.99, state.files / max(state.known, 1)))
    if _missing(item, fetched) and file.id is None and not children:
        state.missing_rows.append((file, file_facts(fetched, outcome)))  # written at the end
        return []
    await finish_file(ctx, file, fetched, outcome)
    if item.depth + 1 > MAX_DEPTH:
        return []
    return [
        Pending(c.loc, file.id, item.url, item.depth + 1, "index")
        for c in children
        if c.loc not in state.visited
    ]


def _carriable(state: ScanState, url: str) -> PreviousFile | None:
    """The previous scan's file of this URL, if it may be carried over whole: its URLs'
    places under max_urls are reserved now (and given back if it turns out changed)."""
    previous = state.previous.get(url)
    if previous is None or previous.stored_urls > state.max_urls - state.urls:
        return None
    state.urls += previous.stored_urls
    return previous


def _unchanged(fetched: FetchResult, check: BodyCheck, previous: PreviousFile) -> bool:
    """A 304, or the same body, read whole."""
    if not fetched.ok or fetched.truncated or fetched.stopped:
        return False
    return fetched.status == 304 or (
        fetched.status == 200 and check.digest == previous.content_hash
    )


async def _carry(
    ctx: JobContext,
    state: ScanState,
    item: Pending,
    file: FileRow,
    previous: PreviousFile,
    fetched: FetchResult,
) -> list[Pending]:
    """An unchanged file: its row points at the URL rows the previous scan showed; an
    index's children are walked from the list kept with it."""
    text = _text_or_none
    columns = (
        file.url,
        file.parent_id,
        file.parent_url,
        file.depth,
        file.source,
        text(fetched.final_url),
        fetched.status,
        fetched.bytes_read,
        text(fetched.etag),
        text(fetched.last_modified),
        fetched.elapsed * 1000,
    )
    file.id = await carry_file(ctx, columns, previous)  # its URLs' places: reserved already
    state.carried += 1
    state.not_modified += fetched.status == 304
    state.bytes += fetched.bytes_read
    state.kinds[previous.kind] += 1
    state.ok += 1
    state.files += 1
    ctx.note_progress(min(0.99, state.files / max(state.known, 1)))
    if fetched.final_url and fetched.final_url != item.url:
        state.visited.add(fetched.final_url)
    if item.depth + 1 > MAX_DEPTH:
        return []
    return [
        Pending(c, file.id, item.url, item.depth + 1, "index")
        for c in previous.children
        if c not in state.visited
    ]


def _text_or_none(value: str | None) -> str | None:
    return None if value is None else storable(value)


async def _fetch(
    fetcher: Fetcher,
    state: ScanState,
    url: str,
    sink: Sink,
    headers: Mapping[str, str] | None = None,
) -> FetchResult:
    """Fetch `url`, unless its host was found unreachable earlier in this scan (no such
    name, refused, connect timeout, refused by the guard, after the fetcher's own retries):
    then it is an error at once rather than another round of connect attempts."""
    origin = _origin(url)
    dead = state.unreachable.get(origin)
    if dead is not None:
        return FetchResult(
            url,
            url,
            error=f"not fetched: {origin} could not be reached ({dead.error})",
            transient=dead.transient,
            unreachable=True,
        )
    fetched = await fetcher.fetch(url, sink, headers=headers)
    if fetched.unreachable and origin:
        state.unreachable.setdefault(origin, fetched)
    return fetched


def _origin(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:  # "http://[::1": the fetcher says what is wrong with it
        return ""
    return f"{parts.scheme}://{parts.netloc}".lower() if parts.netloc else ""


def _sort(entries: list[Any], urls: list[SitemapUrl], children: list[ChildSitemap]) -> None:
    for entry in entries:
        (children if isinstance(entry, ChildSitemap) else urls).append(entry)


def _file_error(
    fetched: FetchResult, parser: SitemapParser, unstorable: str | None, listed: int, children: int
) -> str | None:
    """The file row's error: what went wrong, and for a file read in part, what cut it and
    what was kept of it. None when the file was read whole and well (or we stopped reading
    it ourselves, at max_urls)."""
    kept = (
        f"{children:,} child sitemaps kept" if children and not listed else f"{listed:,} URLs kept"
    )
    if unstorable:
        return f"{unstorable}; {kept}"
    if fetched.error:
        return (
            f"{fetched.error}: the file was cut short, {kept}"
            if fetched.truncated
            else fetched.error
        )
    if fetched.stopped or parser.truncated or parser.error is None:
        return None
    return f"{parser.error}; {kept}" if listed or children else parser.error


def _missing(item: Pending, fetched: FetchResult) -> bool:
    """A well-known path the site simply does not have."""
    return item.source == "well_known" and fetched.status in (404, 410)


def _count(
    state: ScanState, item: Pending, fetched: FetchResult, outcome: FileOutcome, *, transient: bool
) -> None:
    state.bytes += fetched.bytes_read
    state.truncated = state.truncated or outcome.truncated
    if outcome.kind:
        state.kinds[outcome.kind] += 1
    if outcome.error and not outcome.flag_only:
        if _missing(item, fetched):
            state.missing += 1
        else:
            state.errors += 1
            state.transient += transient
            state.first_error = state.first_error or f"{item.url}: {outcome.error}"
    else:
        state.ok += 1
