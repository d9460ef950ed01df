"""Importers: each source format to charops records (see docs/data-format.md)."""
