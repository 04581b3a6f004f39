"""Where a site's sitemaps are: robots.txt Sitemap: lines and the well-known paths."""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.scan.clean import storable
from worker.scan.fetch import Fetcher, FetchResult
from worker.scan.robots import MAX_ROBOTS_BYTES, WELL_KNOWN_PATHS, read_robots
from worker.scan.target import Target


@dataclass(slots=True)
class Discovery:
    """What discovery found. `seeds` are (url, source), source "robots" or "well_known";
    `unreachable` lists each origin that could not be reached at all, with its failure."""

    origin: str
    seeds: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    unreachable: list[tuple[str, FetchResult]] = field(default_factory=list)
    reached: bool = True  # False: no origin answered, and `seeds` is empty


async def discover(fetcher: Fetcher, target: Target) -> Discovery:
    """robots.txt Sitemap: lines and the well-known paths, always both. For a bare name,
    https first; http when https cannot be reached at all.

    A host that cannot be reached at all (no such name, connection refused or timed out,
    TLS failure, an address the guard refuses) is asked nothing more: its well-known
    paths would each fail the same way, one connect timeout after another."""
    found = Discovery(target.origins[0])
    listed: list[str] = []
    for candidate in target.origins:
        result, body = await fetcher.fetch_bytes(candidate + "/robots.txt", retry_unreachable=False)
        found.origin = candidate
        if result.unreachable:
            found.unreachable.append((candidate, result))
            continue
        if result.status is not None:  # the server answered, whatever the status
            # A body cut short (the cap, a timeout, a dropped connection) still lists
            # sitemaps in its complete lines.
            if 200 <= result.status < 300 and (result.ok or result.truncated):
                robots = read_robots(
                    body, result.final_url or candidate + "/robots.txt", cut=result.truncated
                )
                listed = robots.sitemaps
                if robots.cut:
                    found.warnings.append(storable(_robots_cut(result, len(body))))
            break
    if len(found.unreachable) == len(target.origins):
        found.reached = False
        return found
    found.seeds = [(url, "robots") for url in listed]
    found.seeds += [
        (found.origin + path, "well_known")
        for path in WELL_KNOWN_PATHS
        if found.origin + path not in listed
    ]
    return found


def _robots_cut(result: FetchResult, size: int) -> str:
    if result.capped or not result.truncated:  # the download cap, or the text unpacked from gzip
        return (
            f"robots.txt is over {MAX_ROBOTS_BYTES // 1024} KiB: only the Sitemap: lines "
            f"in its first {MAX_ROBOTS_BYTES // 1024} KiB were read"
        )
    return (
        f"robots.txt was cut short ({result.error}): only the Sitemap: lines in its first "
        f"{size:,} bytes were read"
    )
