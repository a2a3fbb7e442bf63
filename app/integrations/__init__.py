"""Integrations with other frameworks (LangChain); their types stay inside these modules."""
