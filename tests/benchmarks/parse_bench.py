"""Benchmark: SitemapParser vs a bare lxml iterparse loop (a script, not a test).

    python tests/benchmarks/parse_bench.py [--runs 7] [--urls 50000]

Generates two 50,000-URL sitemaps in a temp dir (sitemaps.md §3.1 shapes):
``plain`` (loc, lastmod, changefreq, priority) and ``ext`` (the same plus 3
xhtml:link hreflang alternates, 2 image:image and 1 news:news per URL, just
under the 50 MB cap). Timings alternate bare/ours in one subprocess (best of
N each, so machine load hits both alike); each memory figure comes from a
fresh subprocess so peak RSS is its own: ``ΔRSS`` is peak RSS minus RSS
before parsing. The baseline is the
memory-flat iterparse loop (tag filter, ``clear()``, delete previous
siblings) reading the file itself; SitemapParser is fed 64 KiB chunks read
from the same file and builds full entries (dates, priorities, extensions).
Entries are dropped after each chunk, as a caller streaming them to the
database would. Targets: ratio >= 0.8 (plain), >= 0.5 (ext), ΔRSS < 20 MiB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

NS = "http://www.sitemaps.org/schemas/sitemap/0.9"
CHUNK = 64 * 1024


def _lastmod(i: int) -> str:
    return (
        f"2024-{1 + i % 12:02d}-{1 + i % 28:02d}T{i % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}+00:00"
    )


def write_plain(path: Path, urls: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write(f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{NS}">\n')
        for i in range(urls):
            out.write(
                f"  <url>\n    <loc>https://www.example.com/section-{i % 97}/page-{i}.html?ref=sm&amp;id={i}</loc>\n"
                f"    <lastmod>{_lastmod(i)}</lastmod>\n    <changefreq>weekly</changefreq>\n"
                f"    <priority>0.{i % 10}</priority>\n  </url>\n"
            )
        out.write("</urlset>\n")


def write_ext(path: Path, urls: int) -> None:
    with path.open("w", encoding="utf-8") as out:
        out.write(
            f'<?xml version="1.0" encoding="UTF-8"?>\n<urlset xmlns="{NS}"'
            ' xmlns:xhtml="http://www.w3.org/1999/xhtml"'
            ' xmlns:image="http://www.google.com/schemas/sitemap-image/1.1"'
            ' xmlns:news="http://www.google.com/schemas/sitemap-news/0.9">\n'
        )
        for i in range(urls):
            page = f"https://www.example.com/s-{i % 97}/page-{i}.html"
            out.write(
                f"<url>\n<loc>{page}</loc>\n<lastmod>{_lastmod(i)}</lastmod>\n"
                f"<changefreq>weekly</changefreq>\n<priority>0.{i % 10}</priority>\n"
                f'<xhtml:link rel="alternate" hreflang="en" href="{page}"/>\n'
                f'<xhtml:link rel="alternate" hreflang="de" href="https://www.example.de/s-{i % 97}/seite-{i}.html"/>\n'
                f'<xhtml:link rel="alternate" hreflang="x-default" href="{page}"/>\n'
                f"<image:image>\n<image:loc>https://cdn.example.com/img/{i}/hero.jpg</image:loc>\n"
                f"<image:caption>Picture {i}</image:caption>\n</image:image>\n"
                f"<image:image>\n<image:loc>https://cdn.example.com/img/{i}/thumb.jpg</image:loc>\n"
                f"<image:title>Thumb {i}</image:title>\n</image:image>\n"
                f"<news:news>\n<news:publication>\n<news:name>Example Times</news:name>\n"
                f"<news:language>en</news:language>\n</news:publication>\n"
                f"<news:publication_date>{_lastmod(i)}</news:publication_date>\n"
                f"<news:title>Headline {i}</news:title>\n</news:news>\n</url>\n"
            )
        out.write("</urlset>\n")


def _rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def run_bare(path: str) -> int:
    from lxml import etree

    count = 0
    for _, el in etree.iterparse(path, events=("end",), tag=f"{{{NS}}}url"):
        count += 1
        el.clear()
        while el.getprevious() is not None:
            del el.getparent()[0]
    return count


def run_parser(path: str) -> int:
    from worker.scan.parse import SitemapParser

    parser = SitemapParser("https://www.example.com/sitemap.xml")
    count = 0
    with open(path, "rb") as body:
        while chunk := body.read(CHUNK):
            count += len(parser.feed(chunk))
    count += len(parser.close())
    assert parser.error is None, parser.error
    return count


def child(mode: str, path: str, runs: int) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    import lxml.etree  # noqa: F401  (imports are not part of the measurement)

    import worker.scan.parse  # noqa: F401

    if mode == "time":  # interleaved, so load changes on the machine hit both alike
        best = {"bare": float("inf"), "parser": float("inf")}
        for _ in range(runs):
            for name, fn in (("bare", run_bare), ("parser", run_parser)):
                start = time.perf_counter()
                fn(path)
                best[name] = min(best[name], time.perf_counter() - start)
        print(json.dumps(best))
        return
    fn = run_bare if mode == "bare" else run_parser
    if mode == "tracemalloc":
        tracemalloc.start()
        count = fn(path)
        peak = tracemalloc.get_traced_memory()[1]
        print(json.dumps({"urls": count, "tracemalloc_peak": peak}))
        return
    before = _rss_kib()
    count = fn(path)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"urls": count, "rss_delta_kib": peak - before}))


def measure(mode: str, path: Path, runs: int) -> dict[str, float]:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, __file__, "--child", mode, str(path), "--runs", str(runs)],
        check=True,
        capture_output=True,
        text=True,
        cwd=root,
        env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )
    return json.loads(result.stdout)


def main() -> None:
    args = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    args.add_argument("--runs", type=int, default=7, help="best of N timings (default 7)")
    args.add_argument("--urls", type=int, default=50_000)
    args.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    opts = args.parse_args()
    if opts.child:
        child(opts.child[0], opts.child[1], opts.runs)
        return
    import lxml.etree

    print(
        f"python {sys.version.split()[0]}, lxml {lxml.etree.__version__}, libxml2 {lxml.etree.LIBXML_VERSION}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, writer, target in (("plain", write_plain, 0.8), ("ext", write_ext, 0.5)):
            path = Path(tmp) / f"{name}.xml"
            writer(path, opts.urls)
            size = path.stat().st_size / 1e6
            times = measure("time", path, opts.runs)
            bare = measure("bare", path, 1)
            ours = measure("parser", path, 1)
            traced = measure("tracemalloc", path, 1)
            assert bare["urls"] == ours["urls"] == opts.urls, (bare, ours)
            ratio = times["bare"] / times["parser"]
            print(f"\n{name}: {opts.urls:,} URLs, {size:.1f} MB (best of {opts.runs}, interleaved)")
            for label, key, mem in (
                ("bare iterparse", "bare", bare),
                ("SitemapParser", "parser", ours),
            ):
                print(
                    f"  {label:<15} {times[key]:.3f} s  {opts.urls / times[key]:>9,.0f} URLs/s"
                    f"  ΔRSS {mem['rss_delta_kib'] / 1024:5.1f} MiB"
                )
            print(f"  SitemapParser tracemalloc peak {traced['tracemalloc_peak'] / 2**20:.1f} MiB")
            verdict = "ok" if ratio >= target else "BELOW TARGET"
            print(f"  speed ratio {ratio:.2f}x of bare iterparse (target >= {target}x): {verdict}")


if __name__ == "__main__":
    main()
