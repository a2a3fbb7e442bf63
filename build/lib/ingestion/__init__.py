"""Ingestion: files in, embedded segments in the vector store.

Stages: discover (which files, which changed) → read (decode, caption, chunk, thumbnail) →
embed (the core's mapper) → write (the vector-store port). Imports the shared core and adapters
from ``app``; never the HTTP layer.
"""
