"""A program's output made safe to print on a terminal.

A program's bytes reach the user's terminal through `dcodex bus run` (and `judge`); raw, an escape
sequence in them could write the clipboard (OSC 52), retitle the window, clear the
screen, move the cursor to overwrite the verdict line, or reorder text with Unicode
bidi controls. `visible` shows every such character escaped (`\\x1b`, `\\r`,
`\\u202e`) instead; newlines and tabs stay. `--attach` is a terminal by design and
prints raw; `--json` is escaped by JSON itself.
"""

from __future__ import annotations

# C0 controls but newline and tab, DEL, the C1 controls, and Unicode's invisible
# direction and line controls (Trojan Source: a line that reads otherwise than it is).
_CONTROLS = [code for code in range(0x20) if chr(code) not in "\n\t"]
_CONTROLS += [0x7F, *range(0x80, 0xA0)]
_CONTROLS += [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_CONTROLS += [0x2028, 0x2029]
_ESCAPES = {code: (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}") for code in _CONTROLS}
_ESCAPES[ord("\r")] = "\\r"


def visible(text: str) -> str:
    """`text` with every control character but newline and tab written out escaped."""
    return text.translate(_ESCAPES)
