from model.inputs import MAX_TEXT_CHARS, normalize_text, unescape_text
from model.labels import LABELS, label_index


def test_urls_and_mentions_follow_tweeteval_convention():
    text = "@MetroNorth late again http://t.co/46pjzzl6 see www.example.com/x cc @bob_1"
    assert normalize_text(text) == "@user late again http see http cc @user"


def test_email_like_at_is_not_a_mention():
    assert normalize_text("mail me at ann@example.com") == "mail me at ann@example.com"


def test_dump_escapes_are_decoded():
    # Real SemEval spelling: JSON escapes for the apostrophe and comma, HTML entities.
    raw = "I\\u2019m going to DAR\\u002c DC &amp; Tickets &gt;&gt;&gt; \\\"now\\\" &amp;gt;"
    assert normalize_text(raw) == "I\u2019m going to DAR, DC & Tickets >>> \"now\" >"


def test_escaped_surrogate_pair_becomes_one_emoji():
    assert unescape_text("lol \\ud83d\\ude02") == "lol \U0001f602"


def test_emoji_are_kept_and_whitespace_collapsed():
    assert normalize_text("  so   happy \U0001f60d\t\n#yay  ") == "so happy \U0001f60d #yay"


def test_length_is_capped_and_normalising_twice_changes_nothing():
    long_post = "word " * 2000
    once = normalize_text(long_post)
    assert len(once) <= MAX_TEXT_CHARS
    assert normalize_text(once) == once
    sample = "@a I\\u2019m at http://x.y &amp; more"
    assert normalize_text(normalize_text(sample)) == normalize_text(sample)


def test_label_names_map_to_contract_order():
    assert LABELS == ("negative", "neutral", "positive")
    assert [label_index(name) for name in ("negative", " Neutral", "POSITIVE\n")] == [0, 1, 2]
    try:
        label_index("mixed")
    except ValueError as error:
        assert "mixed" in str(error)
    else:
        raise AssertionError("unknown label accepted")
