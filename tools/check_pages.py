"""Check the rendered book as a reader sees it, in a real browser (headless Chromium).

For every chapter page of ``_build/html`` it reports:

- figures without a caption (an output image outside a ``<figure>`` with a ``<figcaption>``);
- code lines longer than 88 characters (they scroll sideways);
- figures drawn smaller than legible: the browser's rendered width of each image, and from it the
  size of the smallest text in the figure, ``MIN_FONT_PT · (rendered px / image px) · (dpi / 72)``
  CSS pixels, converted to points (``· 0.75``). It must be at least ``--min-pt`` (9).

and saves a full-page screenshot of each page under ``--screenshots`` to look at.

    python tools/check_pages.py _build/html                 # exit 1 when any page fails
    python tools/check_pages.py _build/html --screenshots /tmp/pages

Needs ``chromium`` on the PATH (Debian: ``apt-get install chromium``). Not part of the test suite:
CI has no browser. The pages load MathJax from a CDN, so on a machine without network the
screenshots show the TeX source of the equations; the figures and code are drawn as a reader sees
them.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

from ntklib.book import BOOK_DPI, MIN_FONT_PT

MAX_CODE_LINE = 88
WINDOW = (1280, 900)  # a laptop browser window, CSS pixels
MEASURE_SCRIPT = """
<script>
window.addEventListener("load", () => {
  for (const img of document.querySelectorAll("div.cell_output img")) {
    const box = img.getBoundingClientRect();
    img.setAttribute("data-rendered-width", box.width.toFixed(1));
    img.setAttribute("data-natural-width", img.naturalWidth);
  }
  document.body.setAttribute("data-measured", "1");
});
</script>
"""


@dataclass
class PageReport:
    """What one page's DOM says: per image (rendered px, natural px, has caption); long code lines."""

    images: list[tuple[float, int, bool]] = field(default_factory=list)
    long_lines: list[str] = field(default_factory=list)


class _PageParser(HTMLParser):
    """Collects output images (with whether they sit in a captioned figure) and cell code lines."""

    def __init__(self) -> None:
        super().__init__()
        self.report = PageReport()
        self._stack: list[tuple[str, str]] = []  # (tag, class)
        self._figures: list[dict] = []  # open <figure>s: their images and whether captioned
        self._code_depth = 0
        self._code_text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        classes = attributes.get("class") or ""
        if tag not in ("img", "br", "meta", "link", "input", "hr"):
            self._stack.append((tag, classes))
        in_output = any("cell_output" in c for _, c in self._stack)
        if tag == "figure":
            self._figures.append({"images": [], "caption": False})
        elif tag == "figcaption" and self._figures:
            self._figures[-1]["caption"] = True
        elif tag == "img" and in_output:
            image = (float(attributes.get("data-rendered-width", 0)), int(attributes.get("data-natural-width", 0)))
            if self._figures:
                self._figures[-1]["images"].append(image)
            else:
                self.report.images.append((*image, False))
        elif tag == "pre" and any("cell_input" in c for _, c in self._stack):
            self._code_depth += 1

    def handle_endtag(self, tag):
        if tag == "figure" and self._figures:
            figure = self._figures.pop()
            self.report.images += [(*image, figure["caption"]) for image in figure["images"]]
        elif tag == "pre" and self._code_depth:
            self._code_depth -= 1
            if not self._code_depth:
                code = "".join(self._code_text)
                self.report.long_lines += [line for line in code.splitlines() if len(line) > MAX_CODE_LINE]
                self._code_text = []
        while self._stack:
            if self._stack.pop()[0] == tag:
                break

    def handle_data(self, data):
        if self._code_depth:
            self._code_text.append(data)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise SystemExit("chromium not found: install it (Debian: apt-get install chromium)")


def _browser(page: Path, *args: str) -> subprocess.CompletedProcess:
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    command += [f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=10000", *args]
    return subprocess.run([*command, page.as_uri()], capture_output=True, text=True, timeout=120, check=True)


def measure(page: Path) -> PageReport:
    """The page's DOM after layout, with each output image's rendered and natural width."""
    with tempfile.NamedTemporaryFile("w", suffix=".html", dir=page.parent, delete=False) as copy:
        copy.write(page.read_text().replace("</body>", MEASURE_SCRIPT + "</body>"))
    try:
        dom = _browser(Path(copy.name), "--dump-dom").stdout
    finally:
        Path(copy.name).unlink()
    parser = _PageParser()
    parser.feed(dom)
    return parser.report


def smallest_text_pt(rendered_px: float, natural_px: int) -> float:
    """Size in points of the figure's smallest text (MIN_FONT_PT at BOOK_DPI) as the browser draws it."""
    image_px = MIN_FONT_PT * BOOK_DPI / 72
    return image_px * (rendered_px / natural_px) * 0.75


def check(html_dir: Path, min_pt: float, screenshots: Path | None) -> int:
    """Print one line per problem and a summary per page; return the number of problems."""
    problems = 0
    for page in sorted((html_dir / "book").glob("0*.html")):
        report = measure(page)
        sizes = [smallest_text_pt(r, n) for r, n, _ in report.images if n]
        uncaptioned = sum(not captioned for *_, captioned in report.images)
        small = [s for s in sizes if s < min_pt]
        for line in report.long_lines:
            print(f"{page.name}: code line of {len(line)} characters: {line.strip()[:60]}...")
        if uncaptioned:
            print(f"{page.name}: {uncaptioned} figure(s) without a caption")
        if small:
            print(f"{page.name}: {len(small)} figure(s) with text below {min_pt} pt: {[f'{s:.1f}' for s in small]}")
        problems += len(report.long_lines) + uncaptioned + len(small)
        smallest = f"{min(sizes):.1f} pt" if sizes else "-"
        lines = len(report.long_lines)
        print(f"{page.name}: {len(report.images)} figures, smallest text {smallest}, {lines} long lines")
        if screenshots is not None:
            screenshots.mkdir(parents=True, exist_ok=True)
            target = screenshots / f"{page.stem}.png"
            _browser(page, f"--screenshot={target}", f"--window-size={WINDOW[0]},{WINDOW[1] * 12}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("html_dir", type=Path, help="the built book, e.g. _build/html")
    parser.add_argument("--min-pt", type=float, default=9.0, help="smallest legible text size, points")
    parser.add_argument("--screenshots", type=Path, default=None, help="folder for full-page screenshots")
    args = parser.parse_args(argv)
    problems = check(args.html_dir, args.min_pt, args.screenshots)
    print(f"{problems} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
