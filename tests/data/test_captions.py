"""Caption templates vary, and parse recovers the label from everything they produce."""

import random

import pytest

from unimm.data.captions import CaptionTemplates, article

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
GENERIC = ["woman surfing", "surfing", "red circle", "apple", "food & drink"]


@pytest.fixture(params=[(DIGITS, "digit"), (GENERIC, "generic")], ids=["digit", "generic"])
def templates(request):
    return CaptionTemplates(*request.param)


def test_captions_vary_and_are_lowercase(templates):
    rng = random.Random(0)
    for label in range(templates.num_classes):
        captions = {templates.caption(label, rng) for _ in range(60)}
        assert len(captions) >= 4
        assert all(c == c.lower() for c in captions)


def test_parse_recovers_label_from_every_template(templates):
    for label in range(templates.num_classes):
        for caption in templates.all_captions(label):
            assert templates.parse(caption) == label, caption
            assert templates.parse(caption.upper()) == label, caption


def test_vqa_answer_parses(templates):
    rng = random.Random(1)
    for label in range(templates.num_classes):
        for _ in range(10):
            question, answer = templates.vqa(label, rng)
            assert question.endswith("?") and templates.parse(question) == -1
            assert templates.parse(answer) == label


def test_parse_none_or_ambiguous():
    digits = CaptionTemplates(DIGITS, "digit")
    assert digits.parse("a blurry smudge") == -1
    assert digits.parse("a three or an eight") == -1
    assert digits.parse("seven 7") == 7
    assert digits.parse("the digit 17") == -1  # '1' and '7' are not standalone digits
    assert digits.parse("someone") == -1  # 'one' only counts as a whole word


def test_longer_name_wins_over_contained_name():
    generic = CaptionTemplates(GENERIC, "generic")
    assert generic.parse("a woman surfing") == 0
    assert generic.parse("surfing") == 1
    assert generic.parse("an apple and a red circle") == -1


def test_all_texts_covers_digit_examples():
    texts = CaptionTemplates(DIGITS, "digit").all_texts()
    for text in [
        "a handwritten seven",
        "the digit 7",
        "what digit is this?",
        "seven",
        "an image of an eight",
    ]:
        assert text in texts
    assert len(texts) == len(set(texts))


def test_article():
    assert [article(w) for w in ["eight", "one", "apple", "seven", "8"]] == ["an", "a", "an", "a", "an"]


def test_bad_arguments():
    with pytest.raises(ValueError):
        CaptionTemplates(DIGITS, "poem")
    with pytest.raises(ValueError):
        CaptionTemplates(DIGITS, "digit").caption(10, random.Random(0))
