"""The catalogue of application studies: load, validate, query (pandas), trends, plots, exports."""

from catalog.catalog import Catalog, check_catalog

__all__ = ["Catalog", "check_catalog"]
