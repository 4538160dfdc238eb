"""The SSE reader: data lines, [DONE], comments, named events, multi-line data."""

import pytest

from vivace.providers.sse import SSEParseError, iter_sse


async def _events(text: str):
    async def lines():
        for line in text.split("\n"):
            yield line

    return [e async for e in iter_sse(lines())]


async def test_data_lines_and_done():
    events = await _events('data: {"a": 1}\n\n: keep-alive\n\ndata:{"b": 2}\r\n\ndata: [DONE]\n\n')
    assert [e.data for e in events] == [{"a": 1}, {"b": 2}, None]
    assert events[-1].done and not events[0].done


async def test_named_event_and_multiline_data():
    events = await _events('event: error\ndata: {"error":\ndata:  {"message": "x"}}\n\n')
    assert events[0].event == "error" and events[0].data == {"error": {"message": "x"}}


async def test_last_event_without_trailing_blank_line_is_kept():
    assert [e.data for e in await _events('data: {"a": 1}')] == [{"a": 1}]


async def test_non_json_data_is_a_specific_error():
    with pytest.raises(SSEParseError, match="not JSON"):
        await _events("data: hello\n\n")
    with pytest.raises(SSEParseError, match="not a JSON object"):
        await _events("data: [1, 2]\n\n")
