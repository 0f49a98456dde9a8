"""Model output on the page: Markdown rendered, anything dangerous removed."""

from __future__ import annotations

from imagetotext.page.markdown import render_markdown


def test_it_renders_common_markdown():
    html = render_markdown("# Title\n\n**bold** and *it*\n\n- one\n- two\n\n```\ncode <b>\n```")
    assert "<h1>Title</h1>" in html
    assert "<strong>bold</strong> and <em>it</em>" in html
    assert "<li>one</li>" in html
    assert "<pre><code>code &lt;b&gt;\n</code></pre>" in html


def test_it_drops_scripts_handlers_and_javascript_links():
    html = render_markdown('<script>alert(1)</script><p onclick="x()">hi</p>[a](javascript:alert(1)) <iframe src="x">')
    assert "script" not in html and "alert" not in html
    assert "onclick" not in html and "iframe" not in html
    assert "javascript:" not in html


def test_it_keeps_web_links_but_not_images():
    html = render_markdown("[docs](https://example.com) ![pixel](https://tracker.example/p.gif)")
    assert '<a href="https://example.com" rel="nofollow noopener noreferrer">docs</a>' in html
    assert "<img" not in html and "tracker" not in html


def test_the_kept_converter_carries_nothing_from_one_text_to_the_next(monkeypatch):
    import markdown

    from imagetotext.page import markdown as page_markdown

    texts = [
        "```\nsecret <b>\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |",
        "plain\nlines",
        "[x]: http://a.example\n\n[x]",
        "[x] is only a reference in the text before",
    ]
    kept = [render_markdown(text) for text in [*texts, *texts]]

    fresh = lambda: markdown.Markdown(extensions=page_markdown.EXTENSIONS, output_format="html")  # noqa: E731
    monkeypatch.setattr(page_markdown, "_converter", fresh)
    assert kept == [render_markdown(text) for text in [*texts, *texts]]
    assert "secret" not in kept[1] and "<table>" in kept[4] and "<br" in kept[5]
    assert "href" in kept[2] and "href" not in kept[3]
