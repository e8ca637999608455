"""The docs' relative links point at files that exist (results rows, notes, other docs)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")     # [text](target)


def _relative_links(doc: Path) -> list[str]:
    targets = [t.split("#")[0] for t in LINK.findall(doc.read_text())]
    return [t for t in targets if t and not re.match(r"[a-z][a-z0-9+.-]*:", t)]   # not http:, mailto:, ...


def test_relative_links_resolve():
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "bench").glob("*.md"))]
    checked, broken = 0, []
    for doc in docs:
        for target in _relative_links(doc):
            checked += 1
            if not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert checked > 50, "the link pattern found too few links: is it still the docs' style?"
    assert not broken, "links to missing files:\n" + "\n".join(broken)
