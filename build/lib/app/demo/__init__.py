"""The offline demo: a small sample library of real photos and notes, ingested and queried."""
