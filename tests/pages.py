"""The HTML pages the kit writes, parsed the way the tests look at them: start tags with their attributes, the
text, and the ids of <section>s, in document order."""

from __future__ import annotations

import html.parser


class Page(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.text, self.sections = [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "section":
            self.sections.append(dict(attrs).get("id"))

    def handle_data(self, data):
        self.text.append(data)


def parse(page: str) -> Page:
    p = Page()
    p.feed(page)
    return p
