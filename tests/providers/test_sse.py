"""The SSE reader: data lines, [DONE], comments, named events, multi-line data, Unicode line separators."""

import httpx
import pytest

from vivace.providers.sse import SSEParseError, iter_sse


async def _events(text: str, content_type: str = "text/event-stream"):
    response = httpx.Response(200, headers={"content-type": content_type}, content=text.encode("utf-8"))
    return [e async for e in iter_sse(response)]


async def test_data_lines_and_done():
    events = await _events('data: {"a": 1}\n\n: keep-alive\n\ndata:{"b": 2}\r\n\ndata: [DONE]\n\n')
    assert [e.data for e in events] == [{"a": 1}, {"b": 2}, None]
    assert events[-1].done and not events[0].done


async def test_named_event_and_multiline_data():
    events = await _events('event: error\ndata: {"error":\ndata:  {"message": "x"}}\n\n')
    assert events[0].event == "error" and events[0].data == {"error": {"message": "x"}}


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
async def test_unicode_line_separators_inside_data_do_not_split_the_line(separator):
    # str.splitlines() breaks on these; the SSE spec ends lines only at CR, LF and CRLF.
    events = await _events(f'data: {{"text": "a{separator}b"}}\n\ndata: [DONE]\n\n')
    assert [e.data for e in events] == [{"text": f"a{separator}b"}, None]


async def test_non_json_data_is_a_specific_error():
    with pytest.raises(SSEParseError, match="not JSON"):
        await _events("data: hello\n\n")
    with pytest.raises(SSEParseError, match="not a JSON object"):
        await _events("data: [1, 2]\n\n")


async def test_a_response_that_is_not_an_event_stream_is_a_parse_error():
    with pytest.raises(SSEParseError, match="text/event-stream"):
        await _events('{"a": 1}', content_type="application/json")
