"""Every card of a header, as jwst's reader will ask for it.

stdatamodels asks astropy for the image of every card of every header but
the ASDF one as it opens a file (to compare the headers' hash with the one
it stored), and astropy parses a card then: a CONTINUE card that does not
continue a string (it joins the card before it) fails there, and the file
with it. Such files passed the door's walk and identity check and failed in
detector1, a ``permanent_failure`` instead of a ``bad_file`` (a fuzz of a
stdatamodels-written uncal, session 23). A value
astropy cannot parse (``TELESCOP= NaN``, a string without its closing
quote) is no error there: astropy mends the card, and the file opens.

astropy decides, as it will in detector1: a header with any card outside the
plain forms below is parsed by astropy and its cards' images made. The
plain forms (a keyword, ``= `` and a quoted string, T or F, a number written
as FITS writes one, or nothing; a comment; COMMENT, HISTORY and blank cards
of printable text; CONTINUE of a long string) are a subset of what astropy
reads (tests/unit/test_uncal_cards_and_tables.py checks it), judged as
bytes: astropy builds an object per card, about 15 microseconds each, which
for every header of every arrival would have doubled the door's cost.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from astropy.io import fits

from calstream.steps.fitsfile import HduLayout
from calstream.steps.regular_files import open_regular_file

CARD = 80
_END = b"END" + b" " * (CARD - 3)
_KEYWORD = re.compile(rb"[A-Z0-9_-]+ *")
# A string: printable characters, a quote written twice. A number: FITS's
# fixed format (upper-case exponents only; astropy reads more, parsed there).
_VALUE = re.compile(
    rb" *(?:(?P<string>'(?:[ -&(-~]|'')*')|[TF]|[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)"
    rb"(?:[ED][+-]?[0-9]+)?)? *(?:/[ -~]*)?")
_CONTINUED = re.compile(rb"  (?P<string>'(?:[ -&(-~]|'')*') *(?:/[ -~]*)?")
_TEXT = re.compile(rb"[ -~]*")
_COMMENTARY = (b"COMMENT ", b"HISTORY ", b"        ")


def header_card_problem(raw: bytes) -> str | None:
    """Why a card of the header ``raw`` (its blocks, END included) cannot be
    read, as astropy says it; None if every card can."""
    cards = _cards(raw)
    if all(_plain(cards)):
        return None
    try:
        # What stdatamodels asks of every header but the ASDF one as it opens
        # a file (its FITS hash: each card's image). A value astropy cannot
        # parse is no error there, and a card it can fix is fixed.
        str(fits.Header.fromstring(b"".join(cards).decode("ascii")))
    except (fits.VerifyError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        return f"a card cannot be read: {str(exc).splitlines()[0][:160]}"
    return None


def _cards(raw: bytes) -> list[bytes]:
    """The cards up to END (the walk found it, bare, at a card's start)."""
    cards = []
    for at in range(0, len(raw) - CARD + 1, CARD):
        card = raw[at:at + CARD]
        if card == _END:
            break
        cards.append(card)
    return cards


def _plain(cards: list[bytes]) -> Iterator[bool]:
    """Whether each card is of a plain form (see the module's text). A
    CONTINUE card is plain only after a string that ends with ``&``: astropy
    reads it as part of that string."""
    continued = False
    for card in cards:
        keyword = card[:8]
        if keyword == b"CONTINUE":
            match = _CONTINUED.fullmatch(card, 8) if continued else None
        elif keyword in _COMMENTARY:
            match = _TEXT.fullmatch(card, 8)
        elif card[8:10] == b"= " and _KEYWORD.fullmatch(keyword):
            match = _VALUE.fullmatch(card, 10)
        else:
            match = None
        string = match and match.groupdict().get("string")
        continued = bool(string) and string.endswith(b"&'")
        yield match is not None


def file_card_problem(path: Path, hdus: Iterable[HduLayout]) -> str | None:
    """header_card_problem of each header the walk found but the ASDF
    extension's (stdatamodels reads that one as a table: uncal_tables.py),
    named by its HDU."""
    with open_regular_file(path) as f:  # never waits on a FIFO (fitsfile.py)
        for hdu in hdus:
            if hdu.index and hdu.key[0] == "ASDF":
                continue
            f.seek(hdu.header_offset)
            problem = header_card_problem(f.read(hdu.header_size))
            if problem is not None:
                return f"HDU {hdu.index} ({hdu.extname or 'primary'}): {problem}"
    return None
