"""Poetry task: data splitting, prompts, and every scorer part on hand-made poems with hand-computed scores.

The poems are public-domain classics written out here (Shakespeare, Lear, Wordsworth, a Basho
translation) or lines made up for the test. The shared CSV is read in place, never copied.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tasks import poetry, poetry_data, poetry_scoring
from tasks.poetry import PoetryTask
from tasks.poetry_data import (
    build_splits,
    default_data_path,
    example_from_record,
    load_poems,
    prepare_data,
    split_poem,
)
from tasks.poetry_scoring import (
    DEFAULT_WEIGHTS,
    PARTS,
    MissingEmbeddingModel,
    classify_form,
    count_syllables,
    form_part,
    line_rhyme_keys,
    line_syllables,
    nonempty_lines,
    resolve_weights,
    rhyme_part,
    similarity_part,
    syllable_part,
    total_reward,
)

SHARED_CSV = Path(__file__).parents[1] / "../shared/data/public-domain-poems.csv"

SONNET_18 = """Shall I compare thee to a summer's day?
Thou art more lovely and more temperate:
Rough winds do shake the darling buds of May,
And summer's lease hath all too short a date;
Sometime too hot the eye of heaven shines,
And often is his gold complexion dimm'd;
And every fair from fair sometime declines,
By chance or nature's changing course untrimm'd;
But thy eternal summer shall not fade,
Nor lose possession of that fair thou ow'st;
Nor shall death brag thou wander'st in his shade,
When in eternal lines to time thou grow'st:
So long as men can breathe or eyes can see,
So long lives this, and this gives life to thee."""

SONNET_130 = """My mistress' eyes are nothing like the sun;
Coral is far more red than her lips' red;
If snow be white, why then her breasts are dun;
If hairs be wires, black wires grow on her head.
I have seen roses damasked, red and white,
But no such roses see I in her cheeks;
And in some perfumes is there more delight
Than in the breath that from my mistress reeks.
I love to hear her speak, yet well I know
That music hath a far more pleasing sound;
I grant I never saw a goddess go;
My mistress, when she walks, treads on the ground:
And yet, by heaven, I think my love as rare
As any she belied with false compare."""

LIMERICK = """There was an Old Man with a beard,
Who said, "It is just as I feared!
Two Owls and a Hen,
Four Larks and a Wren,
Have all built their nests in my beard!\""""

HAIKU = """An old silent pond
A frog jumps into the pond
Splash! Silence again."""

TINTERN_ABBEY = """Five years have past; five summers, with the length
Of five long winters! and again I hear
These waters, rolling from their mountain-springs
With a soft inland murmur. Once again
Do I behold these steep and lofty cliffs,
That on a wild secluded scene impress
Thoughts of more deep seclusion; and connect"""

COUPLETS = """The morning sun came up the hill,
The air was cold, the trees were still.
A robin sang upon the gate,
And I stood listening, and was late.
I ran the road with all my might,
And reached the school before the light."""

TERCETS = """I saw the river in the rain
go carrying the leaves along
and never once look back at me

The heron stood upon one leg
beside the broken wooden boat
and did not care to say a word

The evening came across the field
with nothing in its empty hands
and sat a while and went away"""

FREE_VERSE = """I celebrate the morning and the kettle,
the cracked blue cup,
the neighbour's radio playing something old through the wall while the rain decides,
and my own hands,
which are older than I remember."""


def response(answer: str, reasoning: str = "It is a sonnet; keep the rhyme.") -> str:
    return f"<think>{reasoning}</think><answer>{answer}</answer>"


def lines_of(text: str, start: int = 0, stop: int | None = None) -> list[str]:
    return nonempty_lines(text)[start:stop]


# ---------------------------------------------------------------- syllables


def test_count_syllables_known_words_and_fallback():
    assert count_syllables("cat") == 1
    assert count_syllables("water") == 2
    assert count_syllables("beautiful") == 3
    assert count_syllables("Water,") == 2  # case and punctuation do not matter
    # not in the CMU dictionary: the `syllables` package's estimate is used
    assert not poetry_scoring.pronouncing.phones_for_word("blorptastic")
    assert count_syllables("blorptastic") == poetry_scoring.syllables.estimate("blorptastic") == 3
    assert count_syllables("") == 0
    assert count_syllables("你好") == 0  # no Latin letters, no syllables


def test_line_syllables():
    assert line_syllables("Shall I compare thee to a summer's day?") == 10
    assert line_syllables("the cat sat on the mat") == 6
    assert line_syllables("And often is his gold complexion dimm'd;") == 10  # dimm'd read as dimmed
    assert line_syllables("   ") == 0


def test_syllable_part_hand_computed():
    gold = ["the cat sat on the mat", "the dog ran to the water"]  # 6, 7 syllables
    assert syllable_part(gold, gold) == 1.0
    # 6 vs 6 → 1; 3 vs 7 → 1 − 4/7; mean over max(2, 2) lines
    assert syllable_part(["the cat sat on the mat", "a dog ran"], gold) == pytest.approx((1 + 3 / 7) / 2)
    # an extra line contributes 0 and raises the denominator to 3
    assert syllable_part(gold + ["and more"], gold) == pytest.approx(2 / 3)
    # a missing line costs the same: one perfect line of two
    assert syllable_part(gold[:1], gold) == pytest.approx(1 / 2)
    # twice too long is floored at 0, not negative
    assert (
        syllable_part(["the cat sat on the mat the cat sat on the mat", "the dog ran to the water"], gold)
        == 0.5
    )
    assert syllable_part([], gold) == 0.0


# ---------------------------------------------------------------- rhyme


GOLD_ABAB = [
    "I walked along the road today",
    "beneath the silver light of night",
    "and found a stone upon the way",
    "that shone beside me clear and bright",
]


def rhyme_scheme(lines: list[str]) -> str:
    """Letters by first appearance of each line's rhyme key, e.g. "ABAB"; "?" for an unknown last word,
    which rhymes with nothing: the scheme a reader checks the rhyme keys (`line_rhyme_keys`) against."""
    letters: dict[str, str] = {}
    return "".join(
        "?" if key is None else letters.setdefault(key, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[len(letters)])
        for key in line_rhyme_keys(lines)
    )


def test_rhyme_scheme_of_sonnets():
    assert rhyme_scheme(lines_of(SONNET_130)) == "ABABCDCDEFEFGG"
    # Sonnet 18 in CMU pronunciations: temperate/date is a period rhyme the dictionary does not have
    # (EH1 M P R AH0 T vs EY1 T), so "date" opens a new rhyme C; dimm'd is read as dimmed; untrimm'd,
    # ow'st and grow'st are not in the dictionary and get "?", which matches nothing.
    assert rhyme_scheme(lines_of(SONNET_18)) == "ABACDED?F?F?GG"
    assert rhyme_scheme(GOLD_ABAB) == "ABAB"
    assert rhyme_scheme(["", "你好"]) == "??"


def test_rhyme_part_hand_computed():
    # gold ABAB over 4 lines: 6 pairs, of which (0,2) and (1,3) rhyme and the other 4 do not
    assert rhyme_part(GOLD_ABAB, GOLD_ABAB) == 1.0
    same_scheme = [
        "we went outside to run and play",
        "and watched the kite go out of sight",
        "we had to stay",
        "all white",
    ]
    assert rhyme_part(same_scheme, GOLD_ABAB) == 1.0
    # ABCD: rhyming class 0/2, non-rhyming class 4/4 → (0 + 1) / 2
    never = ["we went outside to run and play", "and watched the kite go out of sight", "the cat", "a dog"]
    assert rhyme_scheme(never) == "ABCD"
    assert rhyme_part(never, GOLD_ABAB) == 0.5
    # AABB: rhyming class 0/2; non-rhyming pairs (0,1) ✗ (0,3) ✓ (1,2) ✓ (2,3) ✗ → 2/4; (0 + 0.5) / 2
    couplets = ["a sunny day", "along the way", "the night", "the light"]
    assert rhyme_scheme(couplets) == "AABB"
    assert rhyme_part(couplets, GOLD_ABAB) == 0.25
    # an unknown word drops its pairs: (0,2) ✓ rhyme, (0,3) ✓ and (2,3) ✓ no rhyme remain → 1.0
    unknown = ["a sunny day", "a blorptastic", "along the way", "the light"]
    assert rhyme_part(unknown, GOLD_ABAB) == 1.0
    # two aligned lines: the one pair agrees (neither rhymes), scaled by 2 / max(2, 4)
    assert rhyme_part(GOLD_ABAB[:2], GOLD_ABAB) == 0.5
    # two extra lines: agreement 1 on the 4 aligned lines, scaled by 4 / 6
    assert rhyme_part(GOLD_ABAB + ["one more", "and more"], GOLD_ABAB) == pytest.approx(4 / 6)
    assert rhyme_part(GOLD_ABAB[:1], GOLD_ABAB) == 0.0
    assert rhyme_part([], GOLD_ABAB) == 0.0
    assert rhyme_part(["你好", "世界", "诗歌", "月亮"], GOLD_ABAB) == 0.0  # no countable pair


# ---------------------------------------------------------------- form


@pytest.mark.parametrize(
    ("text", "form"),
    [
        (SONNET_18, "sonnet"),
        (SONNET_130, "sonnet"),
        (LIMERICK, "limerick"),
        (HAIKU, "haiku"),
        ("\n".join(lines_of(SONNET_130, 0, 4)), "quatrain"),
        (COUPLETS, "couplet"),
        (TERCETS, "tercet"),
        ("\n".join(lines_of(SONNET_130, 8)), "sestet"),  # EFEFGG: not couplets throughout
        ("\n".join(lines_of(SONNET_130, 0, 8)), "octave"),
        ("\n".join(lines_of(SONNET_130, 0, 12)), "rhymed verse"),
        (TINTERN_ABBEY, "blank verse"),
        (FREE_VERSE, "free verse"),
        ("", "free verse"),
    ],
)
def test_classify_form(text, form):
    assert classify_form(text) == form


def test_classify_form_uses_stanzas_only_when_the_text_has_blank_lines():
    assert classify_form("\n".join(nonempty_lines(TERCETS))) != "tercet"  # one stanza of 9 lines
    # a limerick with its short lines as long as the others is not a limerick
    assert (
        classify_form(LIMERICK.replace("Two Owls and a Hen", "Two Owls and a Hen and a Cat and a Dog"))
        != "limerick"
    )


def test_form_part_classifies_the_completed_poem():
    start, gold = "\n".join(lines_of(SONNET_130, 0, 4)), "\n".join(lines_of(SONNET_130, 4))
    other_ending = "\n".join(lines_of(SONNET_18, 4))  # 10 lines: start + it is again a sonnet
    assert form_part(start, other_ending, gold) == 1.0
    assert form_part(start, "\n".join(lines_of(SONNET_18, 4, 13)), gold) == 0.0  # 13 lines: not a sonnet
    assert form_part(start, "", gold) == 0.0
    # why the whole poem: the last 4 lines of a sonnet, alone, look like a quatrain
    assert classify_form("\n".join(lines_of(SONNET_130, 10))) == "quatrain"


# ---------------------------------------------------------------- similarity and total


def test_similarity_part_is_a_floored_cosine():
    u = torch.tensor([1.0, 0.0])
    assert similarity_part(u, u) == 1.0
    assert similarity_part(u, torch.tensor([0.0, 1.0])) == 0.0
    assert similarity_part(u, -u) == 0.0  # floored, not negative
    assert similarity_part(u, torch.tensor([0.6, 0.8])) == pytest.approx(0.6)


def test_weights_and_total():
    assert sum(DEFAULT_WEIGHTS.values()) == pytest.approx(1.0)
    assert resolve_weights(None) == DEFAULT_WEIGHTS
    weights = resolve_weights({"similarity": 0.0, "form": 0.5})
    assert weights["similarity"] == 0.0 and weights["form"] == 0.5 and weights["format"] == 0.1
    parts = {"format": 1.0, "similarity": 0.8, "form": 1.0, "rhyme": 0.5, "syllables": 0.5}
    assert total_reward(parts, DEFAULT_WEIGHTS) == pytest.approx(0.1 + 0.2 + 0.25 + 0.05 + 0.15)
    with pytest.raises(ValueError, match="meter"):
        resolve_weights({"meter": 1.0})


def test_missing_embedding_package_says_make_install(monkeypatch):
    monkeypatch.setattr(poetry_scoring.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingEmbeddingModel, match="make install"):
        poetry_scoring.embedding_model_dir()


# ---------------------------------------------------------------- data


def poem(n: int, tag: str = "") -> str:
    return "\n".join(f"line {i} of the {tag}poem" for i in range(n))


def test_split_poem_rule():
    start, end = split_poem(poem(7))
    assert start.split("\n") == ["line 0 of the poem", "line 1 of the poem"]  # 7 // 3 = 2
    assert len(end.split("\n")) == 5
    start, end = split_poem(poem(40))
    assert (len(start.split("\n")), len(end.split("\n"))) == (13, 27)
    assert split_poem(poem(4))[0] == "line 0 of the poem"  # max(1, 4 // 3) = 1
    assert split_poem(poem(3)) is None
    assert split_poem(poem(41)) is None
    # blank lines and trailing spaces are dropped; only non-empty lines count
    assert split_poem("a  \n\nb\n \nc\nd\n\n") == ("a", "b\nc\nd")


def write_csv(path: Path, rows: list[dict], columns=("author", "poem_title", "poem_text", "form")) -> Path:
    import csv

    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def synthetic_rows(count: int) -> list[dict]:
    return [
        {"author": f"Author {k}", "poem_title": f"Poem {k}", "title": f"Poem {k}", "poem_text": poem(4 + k % 20, f"{k}th "),
         "text": poem(4 + k % 20, f"{k}th "), "form": "sonnet" if k % 2 else "elegy"}
        for k in range(count)
    ]  # fmt: skip


def test_load_poems_csv_and_jsonl(tmp_path):
    rows = synthetic_rows(3)
    records = load_poems(write_csv(tmp_path / "a.csv", rows))
    assert records[0] == {
        "author": "Author 0",
        "title": "Poem 0",
        "form": "elegy",
        "text": rows[0]["poem_text"],
    }
    # title/text column names, no form column
    records = load_poems(write_csv(tmp_path / "b.csv", rows, ("author", "title", "text")))
    assert records[1]["title"] == "Poem 1" and records[1]["form"] == ""
    with pytest.raises(ValueError, match=r"c\.csv.*poem_text or text"):
        load_poems(write_csv(tmp_path / "c.csv", rows, ("author", "poem_title")))

    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text(
        json.dumps({"author": "A", "title": "T", "text": poem(6)})
        + "\n\n"
        + json.dumps(
            {"author": "B", "title": "U", "poem_start": "one", "poem_end": "two\nthree", "form": "ode"}
        )
        + "\n"
    )
    first, second = load_poems(jsonl)
    assert first["form"] == "" and second["poem_end"] == "two\nthree"
    (tmp_path / "e.jsonl").write_text(json.dumps({"author": "A", "title": "T"}) + "\n")
    with pytest.raises(ValueError, match=r"e\.jsonl:1: missing field\(s\) text"):
        load_poems(tmp_path / "e.jsonl")
    with pytest.raises(FileNotFoundError):
        load_poems(tmp_path / "absent.csv")


def test_load_poems_presplit_csv_and_json_array(tmp_path):
    rows = [
        {"author": "A", "title": "T", "poem_start": "one", "poem_end": "two\nthree", "form": "free_verse"}
    ]
    (record,) = load_poems(
        write_csv(tmp_path / "hub.csv", rows, ("author", "title", "poem_start", "poem_end", "form"))
    )
    assert (record["poem_start"], record["poem_end"], record["text"]) == ("one", "two\nthree", "")
    assert example_from_record(record).data["form_class"] == "free verse"
    (tmp_path / "array.json").write_text(json.dumps(rows))
    assert load_poems(tmp_path / "array.json")[0]["poem_end"] == "two\nthree"
    (tmp_path / "bad.json").write_text("[1]")
    with pytest.raises(ValueError, match=r"bad\.json:1: not a JSON object"):
        load_poems(tmp_path / "bad.json")


def test_example_from_record():
    example = example_from_record({"author": "A", "title": "T", "form": "Sonnet", "text": poem(7)})
    assert example.gold == example.data["poem_end"] == "\n".join(f"line {i} of the poem" for i in range(2, 7))
    assert example.data["form"] == "Sonnet" and example.data["form_class"] == "sonnet"
    assert len(example.id) == 12
    same = example_from_record({"author": "A", "title": "T", "form": "Sonnet", "text": poem(7) + "\n\n"})
    assert same.id == example.id  # stable, and blind to blank lines
    given = example_from_record(
        {"author": "B", "title": "U", "form": "elegy", "poem_start": "x", "poem_end": "y"}
    )
    assert (given.data["poem_start"], given.gold, given.data["form_class"]) == ("x", "y", "")
    with pytest.raises(ValueError, match="4–40"):
        example_from_record({"author": "A", "title": "T", "text": poem(3)})


def test_build_splits_is_seeded_disjoint_and_drops_duplicates():
    rows = [{"author": "A", "title": f"P{k}", "text": poem(5, f"{k}th ")} for k in range(50)]
    duplicate = {"author": "Z", "title": "Again", "text": poem(5, "0th ").upper().replace("\n", "\n\n")}
    splits = build_splits(rows + [duplicate, {"author": "S", "title": "Short", "text": "one\ntwo"}])
    assert (len(splits["train"]), len(splits["test"])) == (45, 5)
    assert not {ex.id for ex in splits["train"]} & {ex.id for ex in splits["test"]}
    assert "Again" not in {ex.data["title"] for split in splits.values() for ex in split}
    again = build_splits(rows)
    assert [ex.id for ex in again["test"]] == [ex.id for ex in splits["test"]]
    assert [ex.id for ex in build_splits(rows, seed=7)["test"]] != [ex.id for ex in splits["test"]]
    # a given split is kept as it is
    tagged = [{**row, "split": "test" if k < 3 else "train"} for k, row in enumerate(rows)]
    assert [ex.data["title"] for ex in build_splits(tagged)["test"]] == ["P0", "P1", "P2"]


def test_default_data_path(tmp_path, monkeypatch):
    monkeypatch.delenv(poetry_data.DATA_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    repo = tmp_path / "repo"
    with pytest.raises(FileNotFoundError, match=r"make data.*--data PATH"):
        default_data_path(repo)
    shared = tmp_path / "shared" / "data" / "public-domain-poems.csv"
    shared.parent.mkdir(parents=True)
    write_csv(shared, synthetic_rows(3))
    assert default_data_path(repo) == shared.resolve()
    prepared = tmp_path / "data" / "poetry.jsonl"  # ./data/poetry.jsonl wins over the shared CSV
    prepared.parent.mkdir()
    prepared.write_text("")
    assert default_data_path(repo) == prepared.resolve()
    monkeypatch.setenv(poetry_data.DATA_ENV, str(tmp_path / "mine.jsonl"))
    with pytest.raises(FileNotFoundError, match=poetry_data.DATA_ENV):
        default_data_path(repo)
    (tmp_path / "mine.jsonl").write_text("")
    assert default_data_path(repo) == (tmp_path / "mine.jsonl").resolve()


def test_prepare_data_round_trip_and_cli(tmp_path, monkeypatch, capsys):
    source = write_csv(tmp_path / "poems.csv", synthetic_rows(30))
    counts = prepare_data(tmp_path / "out" / "poetry.jsonl", source)
    assert counts == {"train": 27, "test": 3}
    records = [json.loads(line) for line in (tmp_path / "out" / "poetry.jsonl").read_text().splitlines()]
    assert {"id", "split", "author", "title", "form", "form_class", "poem_start", "poem_end"} <= set(
        records[0]
    )
    from_csv, from_jsonl = PoetryTask(data=source), PoetryTask(data=tmp_path / "out" / "poetry.jsonl")
    for split in ("train", "test"):
        assert from_jsonl.examples(split) == from_csv.examples(split)

    assert poetry.main(["--prepare", "--out", str(tmp_path / "cli.jsonl"), "--source", str(source)]) == 0
    assert "27 train, 3 test" in capsys.readouterr().out

    def offline():
        raise OSError("no network")

    monkeypatch.setattr(poetry_data, "SHARED_CSV", tmp_path / "absent.csv")
    monkeypatch.setattr(poetry_data, "_hub_records", offline)
    assert poetry.main(["--prepare", "--out", str(tmp_path / "never.jsonl")]) == 1
    assert "schifferlearning/Poetry-Categorized" in capsys.readouterr().err
    assert not (tmp_path / "never.jsonl").exists()


@pytest.mark.skipif(not SHARED_CSV.is_file(), reason=f"the shared poems CSV is absent at {SHARED_CSV}")
def test_shared_csv_splits():
    task = PoetryTask(data=SHARED_CSV)
    train, test = task.examples("train"), task.examples("test")
    total = len(train) + len(test)
    assert 900 <= total <= 1100  # the README: about 1,050 poems of 4–40 lines, before dropping repeats
    assert len(test) == total - int(total * 0.9)
    assert not {ex.id for ex in train} & {ex.id for ex in test}
    texts = [ex.data["poem_start"] + "\n" + ex.gold for ex in train + test]
    assert len(set(texts)) == total
    assert all(4 <= len(text.split("\n")) <= 40 for text in texts)
    assert [ex.id for ex in PoetryTask(data=SHARED_CSV).examples("test")] == [ex.id for ex in test]
    with pytest.raises(ValueError, match="validation"):
        task.examples("validation")


# ---------------------------------------------------------------- the task: prompts and scores


@pytest.fixture(scope="module")
def embedder():
    """The packaged MiniLM model, loaded once for this module (scoring reuses the process-wide cache)."""
    return poetry_scoring.load_embedder("cpu")


@pytest.fixture(scope="module")
def task(tmp_path_factory, embedder):
    path = tmp_path_factory.mktemp("poems") / "poems.jsonl"
    rows = [
        {"author": "William Shakespeare", "title": "Sonnet 18", "form": "sonnet", "text": SONNET_18, "split": "test"},
        {"author": "William Shakespeare", "title": "Sonnet 130", "form": "sonnet", "text": SONNET_130, "split": "test"},
        {"author": "William Wordsworth", "title": "Tintern Abbey", "form": "blank verse", "text": TINTERN_ABBEY,
         "split": "train"},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return PoetryTask(data=path)


def test_messages(task):
    example = task.examples("test")[0]
    system, user = task.messages(example)
    assert system["role"] == "system" and "<think>" in system["content"] and "<answer>" in system["content"]
    assert user["role"] == "user"
    for expected in (
        "William Shakespeare",
        "Sonnet 18",
        "Form: sonnet",
        example.data["poem_start"],
        "</answer>",
    ):
        assert expected in user["content"]
    assert example.gold not in user["content"]


def test_perfect_answer_scores_one(task):
    sonnet_130 = task.examples("test")[1]
    reward = task.score(sonnet_130, response(sonnet_130.gold))
    assert set(reward.parts) == set(PARTS)
    assert reward.parts["similarity"] == pytest.approx(1.0, abs=1e-5)
    assert {k: v for k, v in reward.parts.items() if k != "similarity"} == dict.fromkeys(
        PARTS[:1] + PARTS[2:], 1.0
    )
    assert reward.total == pytest.approx(1.0, abs=1e-5)


def test_gold_ending_is_more_similar_than_another_poems_ending(task):
    sonnet_18, sonnet_130 = task.examples("test")
    own = task.score(sonnet_18, response(sonnet_18.gold)).parts["similarity"]
    other = task.score(sonnet_18, response(sonnet_130.gold)).parts["similarity"]
    unrelated = task.score(sonnet_18, response("Click here to update your account settings.")).parts[
        "similarity"
    ]
    assert own > other > unrelated
    assert 0.0 <= unrelated < 0.3


def test_no_answer_scores_only_format(task):
    example = task.examples("test")[0]
    assert task.score(example, example.gold).parts == dict.fromkeys(PARTS, 0.0)  # no tags at all
    assert task.score(example, "<think>hmm</think>").total == 0.0
    empty = task.score(example, response("  \n\n "))
    assert empty.parts == {**dict.fromkeys(PARTS, 0.0), "format": 1.0}
    assert empty.total == pytest.approx(0.1)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "<answer></answer>",
        response("x" * 100_000),
        response("shall I compare thee\n" * 5_000),
        response("床前明月光\n疑是地上霜\n举头望明月\n低头思故乡"),
        response("<html><body><div class='poem'><p>Rough winds</p><br/><b>do shake</b></div></body></html>"),
        response("<answer>nested</answer>") + "<answer>again</answer>",
        "no tags, just a line of prose about the summer.",
        "\x00\ufffd" * 50,
    ],
)
def test_robust_to_any_response(task, text):
    for example in task.examples("test"):
        reward = task.score(example, text)
        assert set(reward.parts) == set(PARTS)
        assert all(0.0 <= value <= 1.0 for value in reward.parts.values()), reward.parts
        assert 0.0 <= reward.total <= 1.0


def test_non_english_and_enormous_answers_score_low(task):
    example = task.examples("test")[0]
    chinese = task.score(example, response("床前明月光\n疑是地上霜\n举头望明月\n低头思故乡"))
    assert chinese.parts["rhyme"] == chinese.parts["syllables"] == 0.0 and chinese.total < 0.5
    enormous = task.score(example, response((example.gold + "\n") * 1_000))
    assert enormous.parts["syllables"] == pytest.approx(10 / 60)  # 10 gold lines of 60 scored lines
    assert enormous.parts["form"] == 0.0


def test_score_batch_matches_score_and_weights_apply(task):
    examples = task.examples("test")
    responses = [response(examples[0].gold), response(examples[1].gold), "", response("The cat sat.")]
    batch = task.score_batch([examples[0], examples[1], examples[0], examples[1]], responses)
    single = [
        task.score(ex, r)
        for ex, r in zip([examples[0], examples[1], examples[0], examples[1]], responses, strict=True)
    ]
    for got, expected in zip(batch, single, strict=True):
        assert got.total == pytest.approx(expected.total, abs=1e-5)
        assert got.parts == pytest.approx(expected.parts, abs=1e-5)
    only_format = PoetryTask(data=task.data_path, weights=dict.fromkeys(PARTS, 0.0) | {"format": 1.0})
    assert only_format.score(examples[0], response("The cat sat.")).total == 1.0
    with pytest.raises(ValueError, match="unknown poetry reward parts"):
        PoetryTask(data=task.data_path, weights={"meter": 1.0})
