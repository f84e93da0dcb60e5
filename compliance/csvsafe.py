"""The one CSV writer of the platform: cells a spreadsheet reads as text, never as a formula.

OWASP "CSV Injection": a cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a
carriage return is taken by Excel, LibreOffice and Google Sheets for a formula, which
can run commands (DDE: ``=cmd|' /C calc'!A0``) or send data away (``=HYPERLINK(...)``).
Free text (a lot number, a reason, a target) may begin with any of them, so

- a text cell that begins with one of them (or its full-width form, which some
  spreadsheets in East Asian locales treat the same) gets a leading ``'``, the
  spreadsheet's own "this is text" mark;
- a real number (int, float, Decimal) is written as it is: ``-5.0`` stays a number,
  while the text ``"-5"`` typed into a free-text field is neutralised;
- every cell is quoted, so a separator inside a value (``,`` or the ``;`` that many
  European locales split on) can never start a new cell with a formula in it.

Every CSV the platform writes goes through ``csv_bytes``; nothing else imports ``csv``
to write.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Iterable
from decimal import Decimal

FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def neutralise(text: str) -> str:
    """``text``, with a leading ``'`` when a spreadsheet would take it for a formula."""
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


def _is_number(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return False
    return math.isfinite(value)  # "-inf" or "nan" is no number a spreadsheet can hold


def cell(value, fmt: Callable[[object], str] = str) -> str:
    """One cell: ``fmt(value)``, neutralised unless ``value`` is a real, finite number."""
    text = fmt(value)
    return text if _is_number(value) else neutralise(text)


def csv_bytes(
    header: Iterable[str], rows: Iterable[Iterable], *, preamble: Iterable[str] = (), fmt: Callable[[object], str] = str
) -> bytes:
    """UTF-8 CSV: ``# `` comment lines (``preamble``, one line each), the header, the rows."""
    out = io.StringIO()
    for line in preamble:
        # One physical line each: a line break in a value must not start a line of its own.
        out.write("# " + " ".join(str(line).splitlines()) + "\n")
    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
    writer.writerow([neutralise(str(name)) for name in header])
    for row in rows:
        writer.writerow([cell(value, fmt) for value in row])
    return out.getvalue().encode("utf-8")
