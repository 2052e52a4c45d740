"""The explorer: the catalogue, the method graph, trends and our runs as a static web site.

    >>> from explorer import build_site
    >>> stats = build_site("out/site")        # open out/site/index.html in a browser

Everything the site needs is written into the output folder (no CDN, no server): it opens from
`file://` and from any static host. Data travel as `<script>` files, never fetched.
"""

from explorer.build import SiteStats, build_site

__all__ = ["SiteStats", "build_site"]
