"""Pydantic models of the contract: the one definition of every JSON shape, by role.

Property names are PascalCase (aliases); input names match case-insensitively and unknown
input properties are refused, as ASP.NET-style clients expect. Import each model from its
module (`from shared.models.connection import Connection`).
"""
