"""Links and domains: URL normalisation, domain blocklists, shortener flags.

A link is reduced to its host and normalised the way a browser would resolve it:
scheme, user info, port, path and query dropped; trailing dots removed; case folded and
IDNA/UTS #46 mapping applied (``idna`` package), giving the punycode form
(``bücher.de`` → ``xn--bcher-kva.de``); a leading ``www.`` removed. Each host also gets a
look-alike key (the confusables skeleton of its Unicode labels), so ``exаmple.com`` with
a Cyrillic ``а`` hits a rule for ``example.com`` even though its punycode differs.

A rule for ``example.com`` covers its subdomains unless ``include_subdomains=False``.
Known URL shorteners are flagged on their own: they hide the destination, so a bio link
through one cannot be cleared by the blocklist.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit

from .._validation import check_bool, fail
from ._extra import import_text_extra
from .matcher import check_rule
from .normalize import Normalizer

__all__ = [
    "DomainRule",
    "NormalizedLink",
    "DomainMatcher",
    "normalize_link",
    "extract_links",
    "refang",
    "DEFANGED",
    "DEFAULT_SHORTENERS",
]

#: Public URL-shortening services (hosts, already normalised). Pass your own list to
#: :class:`DomainMatcher` to extend it.
DEFAULT_SHORTENERS: frozenset[str] = frozenset(
    {
        "bit.ly",
        "bitly.com",
        "tinyurl.com",
        "t.co",
        "goo.gl",
        "ow.ly",
        "is.gd",
        "v.gd",
        "buff.ly",
        "rebrand.ly",
        "cutt.ly",
        "shorturl.at",
        "t.ly",
        "tiny.cc",
        "rb.gy",
        "bit.do",
        "s.id",
        "lnkd.in",
        "tr.im",
        "shorte.st",
        "adf.ly",
        "qr.ae",
        "soo.gd",
        "clck.ru",
        "u.to",
        "x.co",
        "bl.ink",
        "short.io",
        "tiny.one",
        "t.me",
    }
)

_STRIP = "<>()[]{}\"'`,;!?"

#: Defanged spellings of link punctuation, as in threat-intelligence reports and in bios
#: that dodge link filters (``example[.]com``, ``hxxps://``), undone before parsing.
#: Compared in lower case; "dot" only in brackets, since a bare "dot" is an ordinary word.
DEFANGED: tuple[tuple[str, str], ...] = (
    ("[.]", "."),
    ("(.)", "."),
    ("{.}", "."),
    ("[dot]", "."),
    ("(dot)", "."),
    ("{dot}", "."),
    ("[:]", ":"),
    ("[://]", "://"),
    ("[/]", "/"),
    ("hxxp", "http"),
)


def refang(token: str) -> str:
    """Undo defanged link punctuation (:data:`DEFANGED`); other text is returned as is.

    The result is lower case where a defanged spelling was found (hosts are case-free).
    """
    if not isinstance(token, str):
        raise fail("token", "refang", "a str", token)
    # Every defanged spelling has a bracket or an "x": most tokens leave here, cheaply
    # (extract_links calls this on every word of a bio).
    if not ("[" in token or "(" in token or "{" in token or "x" in token or "X" in token):
        return token
    low = token.lower()
    if not any(pattern in low for pattern, _ in DEFANGED):
        return token
    for pattern, plain in DEFANGED:
        low = low.replace(pattern, plain)
    return low


@dataclass(frozen=True)
class NormalizedLink:
    """A link reduced to its host.

    Attributes
    ----------
    original : str
        The link as found.
    host : str
        ASCII (punycode) host without ``www.`` and trailing dots; ``""`` if unparsable.
    host_key : str
        Look-alike key of the host (confusables skeleton of its Unicode labels).
    valid : bool
        False when the host could not be parsed or fails IDNA; such links are reported,
        never silently ignored.
    """

    original: str
    host: str
    host_key: str
    valid: bool


@functools.cache
def _host_normalizer() -> Normalizer:
    # Look-alikes, case and accents only: digits and hyphens are real in host names.
    return Normalizer(
        leetspeak=False, separators=False, emoji=False, squeeze=False, cache_size=4096
    )


def _host_key(unicode_host: str) -> str:
    norm = _host_normalizer()
    return ".".join(norm.key(label).replace(" ", "") for label in unicode_host.split("."))


def normalize_link(link: str) -> NormalizedLink:
    """Normalise one link (a URL with or without scheme, or a bare domain).

    Parameters
    ----------
    link : str

    Returns
    -------
    NormalizedLink
    """
    if not isinstance(link, str):
        raise fail("link", "normalize_link", "a str", link)
    raw = refang(link.strip()).strip(_STRIP)
    text = raw if "://" in raw else "http://" + raw
    try:
        host = urlsplit(text).hostname or ""
    except ValueError:
        host = ""
    host = host.strip().rstrip(".").lower()
    if not host or any(ch.isspace() for ch in host):
        return NormalizedLink(link, "", _host_key(host), False)
    idna = import_text_extra("idna", "Link normalisation")
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii")
        unicode_host = idna.decode(ascii_host)
        valid = True
    except (idna.IDNAError, UnicodeError, ValueError):
        # Not a registrable name (for example an underscore or a symbol); keep what we
        # can so rules can still match its look-alike key, and mark it invalid.
        ascii_host = host.encode("ascii", "ignore").decode("ascii")
        unicode_host = host
        valid = False
    ascii_host = ascii_host.rstrip(".")
    if ascii_host.startswith("www."):
        ascii_host = ascii_host[4:]
    if unicode_host.startswith("www."):
        unicode_host = unicode_host[4:]
    return NormalizedLink(link, ascii_host, _host_key(unicode_host), valid)


def _looks_like_link(token: str) -> bool:
    token = refang(token)
    if "://" in token:
        return True
    if token.startswith("www."):
        return True
    head = token.split("/", 1)[0].strip(_STRIP).rstrip(".")
    if "." not in head or "@" in head:
        return False
    tld = head.rsplit(".", 1)[1]
    return len(tld) >= 2 and tld.isalpha()


def extract_links(text: str) -> list[str]:
    """Return the whitespace-separated tokens of ``text`` that look like links.

    Linear in the length of the text: no regular expression runs over user input.
    Defanged links (``example[.]com``, ``hxxps://example(dot)com``) count as links (see
    :func:`refang`); a bare ``example dot com``, split over several tokens, does not.
    """
    if not isinstance(text, str):
        raise fail("text", "extract_links", "a str", text)
    return [tok for tok in text.split() if _looks_like_link(tok)]


@dataclass(frozen=True)
class DomainRule:
    """A blocked or flagged domain.

    Parameters
    ----------
    domain : str
        A host or URL; it is normalised with :func:`normalize_link`.
    category : str, default "blocked_domain"
    severity : float, default 1.0
        In ``(0, 1]``.
    action : {"block", "warn"}, default "block"
    include_subdomains : bool, default True
    """

    domain: str
    category: str = "blocked_domain"
    severity: float = 1.0
    action: str = "block"
    include_subdomains: bool = True

    def __post_init__(self) -> None:
        check_rule(self, "domain", "DomainRule")
        check_bool(self.include_subdomains, "include_subdomains", "DomainRule")


class DomainMatcher:
    """Look up normalised link hosts in a domain blocklist.

    Parameters
    ----------
    rules : iterable of DomainRule or str
        Plain strings become ``DomainRule(domain)``.
    shorteners : iterable of str, optional
        Hosts of URL shorteners to flag; defaults to :data:`DEFAULT_SHORTENERS`.

    Notes
    -----
    A lookup walks the host's parent domains (``a.b.example.com``, ``b.example.com``,
    ``example.com``, ``com``): time linear in the host length, whatever the rules.
    """

    def __init__(
        self,
        rules: Iterable[DomainRule | str] = (),
        *,
        shorteners: Iterable[str] | None = None,
    ) -> None:
        where = "DomainMatcher"
        if isinstance(rules, (str, bytes)):
            raise fail("rules", where, "an iterable of DomainRule or str", rules)
        parsed = []
        for i, r in enumerate(rules):
            if isinstance(r, str):
                r = DomainRule(r)
            if not isinstance(r, DomainRule):
                raise fail(
                    "rules",
                    where,
                    "an iterable of DomainRule or str",
                    f"{r!r} at position {i}",
                    describe=False,
                )
            parsed.append(r)
        self.rules_ = tuple(parsed)
        self._by_host: dict[str, list[int]] = {}
        self._by_key: dict[str, list[int]] = {}
        for i, r in enumerate(self.rules_):
            link = normalize_link(r.domain)
            if not link.host and not link.host_key:
                raise fail(
                    "rules",
                    where,
                    "rules whose domain normalises to a host",
                    f"{r.domain!r} (rule {i})",
                    describe=False,
                )
            if link.host:
                self._by_host.setdefault(link.host, []).append(i)
            if link.host_key:
                self._by_key.setdefault(link.host_key, []).append(i)
        if shorteners is None:
            shorteners = DEFAULT_SHORTENERS
        if isinstance(shorteners, (str, bytes)):
            raise fail("shorteners", where, "an iterable of str", shorteners)
        self.shorteners_ = frozenset(normalize_link(s).host for s in shorteners)

    def lookup(self, link: NormalizedLink) -> tuple[list[int], bool]:
        """Return ``(rule indices, is_shortener)`` for one normalised link."""
        hits: set[int] = set()
        for table, host in ((self._by_host, link.host), (self._by_key, link.host_key)):
            if not host:
                continue
            labels = host.split(".")
            for depth in range(len(labels)):
                suffix = ".".join(labels[depth:])
                for i in table.get(suffix, ()):
                    if depth == 0 or self.rules_[i].include_subdomains:
                        hits.add(i)
        return sorted(hits), link.host in self.shorteners_

    def match(self, link: str) -> tuple[NormalizedLink, list[int], bool]:
        """Normalise ``link`` and look it up: ``(normalised, rule indices, is_shortener)``."""
        norm = normalize_link(link)
        hits, short = self.lookup(norm)
        return norm, hits, short
