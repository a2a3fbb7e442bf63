"""The framework-free domain core: models, ports, errors, retrieval and answering.

Nothing in this package imports litestar, qdrant_edge, qdrant_client, torch, open_clip,
sentence_transformers or httpx; ``tests/test_layers.py`` enforces it.
"""
