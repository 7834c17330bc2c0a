"""The token-vector folder a skipgram/cbow run writes (``<run>/model/``) and everything that
reads one (``init_embeddings``, frozen-feature heads, model cards).

The folder is a ``sentence_transformers`` static-embedding folder
(``SentenceTransformer(dir).encode(texts)`` is the mean of the token vectors) that also holds
the tokenizer (``AutoTokenizer.from_pretrained(dir)``), the mask of the token ids that got a
vector and the run's metadata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nlp_ssl.errors import DataError
from nlp_ssl.run_files import MODEL_DIR, atomic_dir, write_json
from nlp_ssl.run_format import FORMAT, vector_arrays

VECTORS_FILE = "embeddings.safetensors"
"""Which token ids got a vector (``trained``); its presence marks a skipgram/cbow folder."""
STATIC_WEIGHTS, STATIC_KEY = "model.safetensors", "embedding.weight"
"""Where ``sentence_transformers``' StaticEmbedding keeps the vectors, by token id."""
INFO_FILE = "embeddings.json"


def save_vector_folder(vectors: np.ndarray, trained: np.ndarray, tokenizer, target: Path, info: dict) -> None:
    """A ``SentenceTransformer`` static-embedding folder + the tokenizer + our metadata,
    written beside ``target`` and renamed over it."""
    import torch
    from safetensors.numpy import save_file
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding

    from nlp_ssl.tokenizer import save_tokenizer

    st = SentenceTransformer(
        modules=[StaticEmbedding(tokenizer, embedding_weights=torch.from_numpy(vectors))], device="cpu"
    )
    with atomic_dir(target) as staging:
        st.save(str(staging))
        save_tokenizer(tokenizer, staging)
        # the vectors themselves are the StaticEmbedding's weights (model.safetensors): only the mask here
        save_file({"trained": trained.astype(np.uint8)}, str(staging / VECTORS_FILE))
        write_json(staging / INFO_FILE, {**info, "format": FORMAT})


def vector_folder(path: str | Path) -> Path | None:
    """The static-embedding folder of a skipgram/cbow run (given the run or its ``model/``),
    or None when ``path`` is not one."""
    path = Path(path).expanduser()
    for folder in (path, path / MODEL_DIR):
        if (folder / VECTORS_FILE).is_file():
            return folder
    return None


def load_vectors(path: str | Path, key: str = "init_embeddings") -> tuple[np.ndarray, np.ndarray, Path]:
    """Vectors ``[vocab, dim]``, the trained-row mask and the folder, from an embedding run or
    its ``model/`` folder."""
    from safetensors.numpy import load_file

    folder = vector_folder(path)
    if folder is None:
        path = Path(path).expanduser()
        what = (
            "does not exist"
            if not path.exists()
            else f"is not a skipgram/cbow run (no {VECTORS_FILE} in it or in {path / MODEL_DIR})"
        )
        raise DataError(f"{key}: {path} {what}")
    name = VECTORS_FILE

    def read_static():
        nonlocal name
        name = STATIC_WEIGHTS
        return load_file(str(folder / name))[STATIC_KEY]

    try:
        vectors, trained = vector_arrays(load_file(str(folder / name)), read_static)
    except Exception as exc:
        raise DataError(
            f"{key}: {folder / name} cannot be read ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
        ) from None
    if len(trained) != len(vectors):
        raise DataError(
            f"{key}: {folder}: {len(vectors)} vectors but a mask of {len(trained)} token ids; the folder mixes two runs"
        )
    return vectors, trained, folder
