"""nlp-ssl: from raw text to a published, fine-tuned language model on the Hugging Face stack."""

__version__ = "0.1.0"
