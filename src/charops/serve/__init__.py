"""Local serving: a KServe model server with OpenAI-compatible routes for the model's characters.

- ``engine.py``: continuous batching over ``model(...)`` (bounded queue, token budget,
  per-request sampling, seeds and logits processors, cancellation, drain, health).
- ``kvcache.py``: the engine's KV caches: the LRU prefix cache and the left-padded batch cache.
- ``characters.py``: the profiles in ``<model_dir>/characters.jsonl`` as system prompts.
- ``openai_api.py``: ``/openai/v1/models``, ``chat/completions``, ``completions`` (+ SSE), the
  API-key / body-size guard, OpenAI-style errors.
- ``server.py``: the ``kserve.Model`` subclass and ``kserve.ModelServer`` on 127.0.0.1.

    python -m charops.serve.server --model runs/dpo/model --port 8080
    charops deploy charops-chat --local
"""
