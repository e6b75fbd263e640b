"""The bundled demo: a sample help center (``knowledge_base/``) of the fictional Northwind Cloud."""
