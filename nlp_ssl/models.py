"""Model size presets and builders for the pretraining objectives.

``mlm`` builds a BERT encoder (``BertForMaskedLM``), ``clm`` a GPT-2 decoder
(``GPT2LMHeadModel``): both are architectures ``EncoderDecoderModel`` can warm-start from
(BERT as encoder, GPT-2 as decoder with cross-attention added), and both load with
``AutoModelForMaskedLM`` / ``AutoModelForCausalLM``. The vocabulary always comes from the
tokenizer, and every special-token id is written into the model config.
"""

from __future__ import annotations

from dataclasses import dataclass

from nlp_ssl.errors import ConfigError, DataError

PRESETS = {
    # name: (layers, hidden, heads, intermediate)
    "tiny": (2, 64, 2, 256),
    "mini": (4, 256, 4, 1024),
    "small": (6, 512, 8, 2048),
    "base": (12, 768, 12, 3072),
}


@dataclass
class ModelConfig:
    """Architecture of the pretrained model; explicit fields override the preset."""

    preset: str = "mini"
    """tiny (2x64), mini (4x256), small (6x512), base (12x768): layers x hidden."""
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    intermediate: int | None = None
    max_positions: int = 512
    dropout: float = 0.0
    """Dropout on hidden states and attention; 0 pretrains faster on short budgets."""

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ConfigError(f"'preset' must be one of {', '.join(PRESETS)}, got {self.preset!r}")
        layers, hidden, heads, _ = self.resolved()
        if hidden % heads:
            raise ConfigError(f"'hidden' ({hidden}) must be divisible by 'heads' ({heads})")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"'dropout' must be in [0, 1), got {self.dropout}")
        for name, value in (("layers", layers), ("hidden", hidden), ("heads", heads), ("max_positions", self.max_positions)):
            if value <= 0:
                raise ConfigError(f"{name!r} must be positive, got {value}")

    def resolved(self) -> tuple[int, int, int, int]:
        layers, hidden, heads, inter = PRESETS[self.preset]
        hidden = self.hidden or hidden
        return (
            self.layers or layers,
            hidden,
            self.heads or heads,
            self.intermediate or (4 * hidden if self.hidden else inter),
        )


def build_model(objective: str, cfg: ModelConfig, tokenizer):
    """A freshly initialised model for ``objective`` sized by ``cfg``, vocab from ``tokenizer``."""
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    layers, hidden, heads, inter = cfg.resolved()
    ids = dict(
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    if objective == "mlm":
        if tokenizer.mask_token_id is None:
            raise DataError(f"tokenizer {tokenizer.name_or_path}: has no mask token, which masked-LM pretraining needs")
        config = BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=inter,
            max_position_embeddings=cfg.max_positions,
            hidden_dropout_prob=cfg.dropout,
            attention_probs_dropout_prob=cfg.dropout,
            type_vocab_size=2,
            **ids,
        )
        return BertForMaskedLM(config)
    if objective == "clm":
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_inner=inter,
            n_positions=cfg.max_positions,
            resid_pdrop=cfg.dropout,
            embd_pdrop=cfg.dropout,
            attn_pdrop=cfg.dropout,
            **ids,
        )
        return GPT2LMHeadModel(config)
    raise ConfigError(f"'objective' must be 'mlm' or 'clm', got {objective!r}")


def check_vocab(model, tokenizer, where: str) -> None:
    """Fail early, and clearly, when token ids could index past the embedding matrix."""
    embeddings = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > embeddings:
        raise DataError(
            f"{where}: tokenizer has {len(tokenizer)} tokens but the model's embedding has {embeddings} rows; "
            "use the tokenizer the model was trained with"
        )


def count_parameters(model, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def flops_per_token(model, seq_len: int) -> float:
    """Training FLOPs per token: 6N for the matmul weights plus attention scores (PaLM, app. B).

    ``N`` counts no embedding table (a lookup costs no FLOPs) but does count the output
    projection onto the vocabulary, tied or not, since that is a full matmul.
    """
    import torch

    cfg = model.config
    embeddings = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters())
    layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    hidden = getattr(cfg, "hidden_size", None) or cfg.n_embd
    n = count_parameters(model) - embeddings + cfg.vocab_size * hidden
    return 6 * n + 12 * layers * hidden * seq_len
