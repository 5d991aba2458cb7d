#!/bin/sh
# Debian packages for `make pdf` (Jupyter Book's LaTeX builder, XeLaTeX). Idempotent: does
# nothing when they are installed. Needs root (or sudo) and apt; about 700 MB.
#   xelatex, not pdflatex: the chapters' outputs hold Unicode (progress-bar blocks █, ±, ≤,
#   arrows) that pdflatex cannot typeset; XeLaTeX with GNU FreeFont has the glyphs.
#   xindy: Sphinx builds the index with xindy under XeLaTeX.
set -eu
PACKAGES="latexmk texlive-xetex texlive-latex-recommended texlive-latex-extra \
texlive-fonts-recommended texlive-fonts-extra texlive-plain-generic fonts-freefont-otf xindy"

missing=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -z "$missing" ] && command -v xelatex >/dev/null && command -v latexmk >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install-pdf-deps: no apt-get here; install TeX Live with XeLaTeX, latexmk, xindy and" >&2
    echo "GNU FreeFont by other means, then run make pdf again. Missing:$missing" >&2
    exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-pdf-deps: installing$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
