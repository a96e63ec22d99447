"""Training the embedded shapes-world Uni-X: text tokenizer, image tokenizer, task sequences, the two LM
stages and held-out evaluation. Used by ``scripts/train_embedded.py`` and ``scripts/evaluate_embedded.py``.

Importing this package does no work; import the modules (``data``, ``text_tokenizer``, ``train_lm``,
``evaluate``) directly.
"""
