"""Adapters: the core's ports implemented over real libraries (open_clip, sentence-transformers,
qdrant-edge, httpx). Library types never leave the module that uses them."""
