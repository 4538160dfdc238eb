"""The text a classification prompt is built from: placeholders filled literally, sizes bounded.

A client-supplied template is data, not code: `{text}`, `{labels}` and `{question}` are replaced by
their values in one pass (a value that itself contains `{labels}` stays as written), every other
brace is kept as it is, and nothing is formatted, padded or looked up. So a template can neither
grow the prompt beyond the sum of its parts nor read anything it was not given.
"""

from __future__ import annotations

import re

from vivace.engine.config import InvalidParameterError

MAX_TEMPLATE_CHARS = 8192  # a template is an instruction around the text, not a second document
MAX_LABELS = 64  # each label is one scored request over the shared prefix
MAX_LABEL_CHARS = 256

PLACEHOLDERS = ("text", "labels", "question")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(PLACEHOLDERS) + r")\}")

DEFAULT_INSTRUCTION = (
    "Classify the text into exactly one of these labels: {labels}.\n\nText: {text}\n\nAnswer with the label only."
)
QUESTION_INSTRUCTION = "{text}\n\n{question}\nAnswer with exactly one of: {labels}."
PLAIN_TEMPLATE = "Text: {text}\nLabels: {labels}\nLabel:"
PLAIN_QUESTION_TEMPLATE = "{text}\n\n{question}\nOptions: {labels}\nAnswer:"


def fill(template: str, values: dict[str, str]) -> str:
    """`template` with each `{name}` of `values` replaced by its value, literally and in one pass."""
    return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), template)


def check_template(template: str) -> None:
    """Raise InvalidParameterError (param "template") if the template is over MAX_TEMPLATE_CHARS."""
    if len(template) > MAX_TEMPLATE_CHARS:
        raise InvalidParameterError("template", f"must be at most {MAX_TEMPLATE_CHARS:,} characters")


def check_labels(labels: list[str], param: str = "labels") -> None:
    """Raise InvalidParameterError naming `param` unless there are 1..MAX_LABELS distinct, short labels."""
    if not labels:
        raise InvalidParameterError(param, "must name at least one label")
    if len(labels) > MAX_LABELS:
        raise InvalidParameterError(param, f"at most {MAX_LABELS} labels, got {len(labels)}")
    if len(set(labels)) != len(labels) or any(not label for label in labels):
        raise InvalidParameterError(param, "must be distinct non-empty strings")
    long = [label for label in labels if len(label) > MAX_LABEL_CHARS]
    if long:
        raise InvalidParameterError(param, f"each label must be at most {MAX_LABEL_CHARS} characters")
