"""Training of LLaDA-architecture models with the masked-diffusion objective (the embedded testbed).

- ``unmask.models.tokenizer``: byte-level BPE training with LLaDA's special tokens and chat template.
- ``unmask.train.data``: SFT examples -> padded rows (LLaDA's SFT layout).
- ``unmask.train.objective``: the objective (``forward_process``, ``per_row_loss``).
- ``unmask.train.trainer``: the training loop (``Trainer``); ``unmask.train.plots``: loss curves.
- ``unmask.train.selection``: the ``BatchSelector`` hook for online batch selection.
- ``unmask.train.presets`` / ``pipeline`` / ``cli``: presets, the end-to-end run, ``train_command``.
"""
