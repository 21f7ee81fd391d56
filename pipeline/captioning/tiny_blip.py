"""A tiny, randomly initialised BLIP captioner built offline from configs.

The real transformers classes (``BlipForConditionalGeneration``, ``BlipProcessor`` = ``BlipImageProcessor`` +
``BertTokenizer``) with small towers and a small WordPiece vocabulary written here (BLIP's BERT special tokens,
its ``[DEC]`` decoder start, common caption words, a few suffixes), so tests and the demo caption real images on
CPU without weights or network. Weights are random but fixed by a seed; the captions are word salad, but the
same image gives the same caption and different images different ones.
"""

from __future__ import annotations

import hashlib

import torch

from shards.layout import canonical_json

TINY_VERSION = 1  # bump when the vocabulary or the config below changes: it is the tiny captioner's revision
IMAGE_SIZE = 32
# BERT's special tokens (ids 0-4 as in BertTokenizer's defaults) and BLIP's decoder start token.
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]")
WORDS = """
a an the of on in with and at by near next to from under over behind front top side its
there is are two three four some many group close up view photo picture image drawing painting
man woman person people child dog cat bird horse fish flower tree plant leaf grass field road street
house building temple tower bridge car truck plane airplane boat ship train bike sky cloud water sea
river lake mountain beach snow rock wall floor table chair bed window door food plate bowl fruit cake
number digit letter sign text black white red green blue yellow brown gray orange pink purple dark light
small large big old new little long round square sitting standing flying lying walking blurry colorful
zero one five six seven eight nine
""".split()
SUFFIXES = ("##s", "##es", "##ed", "##ing", "##y")
HIDDEN = 32


def tiny_vocab() -> dict[str, int]:
    """Token -> id: the specials, the words (sorted, deduplicated), the suffixes."""
    tokens = [*SPECIALS, *sorted(set(WORDS)), *SUFFIXES]
    return {t: i for i, t in enumerate(tokens)}


def tiny_config_dict(vocab_size: int) -> dict:
    """BlipConfig keyword arguments. Initialiser range 0.2 (BLIP's own are 0.02 and 1e-10 for vision): with
    smaller random weights every image decodes to the same caption; with these the image decides it."""
    specials = {t: i for i, t in enumerate(SPECIALS)}
    text = dict(vocab_size=vocab_size, hidden_size=HIDDEN, encoder_hidden_size=HIDDEN, intermediate_size=37,
                projection_dim=HIDDEN, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=64,
                bos_token_id=specials["[DEC]"], pad_token_id=specials["[PAD]"], sep_token_id=specials["[SEP]"],
                eos_token_id=specials["[SEP]"], initializer_range=0.2)
    vision = dict(hidden_size=HIDDEN, intermediate_size=37, projection_dim=HIDDEN, num_hidden_layers=2,
                  num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=8, initializer_range=0.2)
    return dict(text_config=text, vision_config=vision, projection_dim=HIDDEN, image_text_hidden_size=HIDDEN,
                initializer_range=0.2)


def tiny_revision(seed: int = 0) -> str:
    """The tiny captioner's identity in a caption set's spec: a hash of its vocabulary, config and seed."""
    vocab = tiny_vocab()
    blob = canonical_json({"version": TINY_VERSION, "vocab": list(vocab), "config": tiny_config_dict(len(vocab)),
                           "seed": seed})
    return f"tiny-v{TINY_VERSION}-{hashlib.sha256(blob).hexdigest()[:16]}"


def build_tiny_tokenizer():
    """BLIP's tokenizer class (a WordPiece ``BertTokenizer``, ``[DEC]`` as its bos token) on the tiny vocabulary."""
    from transformers import BertTokenizer

    return BertTokenizer(vocab=tiny_vocab(), bos_token="[DEC]", model_max_length=64)


def build_tiny_blip(seed: int = 0):
    """(``BlipForConditionalGeneration`` with tiny random weights fixed by ``seed``, its ``BlipProcessor``)."""
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessor, BlipProcessor

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(seed)
    model = BlipForConditionalGeneration(BlipConfig(**tiny_config_dict(len(tokenizer)))).eval()
    processor = BlipProcessor(image_processor=BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
                              tokenizer=tokenizer)
    return model, processor
