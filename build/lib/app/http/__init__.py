"""The HTTP edge: a Litestar app over the core. Thin controllers, msgspec wire types,
one exception-to-problem-details mapping."""
